"""The edbus Django app: ``INSTALLED_APPS += ["edbus.contrib.django"]`` (an Open edX plugin app in the LMS
and Studio, through the ``lms.djangoapp`` / ``cms.djangoapp`` entry points)."""

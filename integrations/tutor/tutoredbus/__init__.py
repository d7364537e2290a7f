"""tutor-contrib-edbus: the Tutor plugin that runs Open edX's event bus on edbus."""

__version__ = "0.1.0"

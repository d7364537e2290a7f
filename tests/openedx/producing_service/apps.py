from django.apps import AppConfig


class ProducingServiceConfig(AppConfig):
    name = "tests.openedx.producing_service"
    label = "producing_service"

from django.apps import AppConfig


class MlcoreConfig(AppConfig):
    name = "mlcore"
    verbose_name = "Machine learning"

    def ready(self) -> None:
        # Registers the deploy checks; importing mlcore.checks loads no TensorFlow.
        from mlcore import checks  # noqa: F401

"""System checks: the portal is useless without a model, so say so at deploy time."""
from django.conf import settings
from django.core.checks import Error, register


@register(deploy=True)
def check_model_artifacts(app_configs, **kwargs):
    """Fail ``manage.py check --deploy`` when the model card or weights are missing or altered."""
    import json

    from mlcore.inference import CARD_FILENAME
    from mlcore.network import sha256_of

    model_dir = settings.MLCORE_MODEL_DIR
    card_path = model_dir / CARD_FILENAME
    if not card_path.is_file():
        return [Error(f"No model card at {card_path}.", hint="Set MLCORE_MODEL_DIR or train a model.",
                      id="mlcore.E001")]
    card = json.loads(card_path.read_text())
    weights = model_dir / card.get("weights_file", "")
    if not weights.is_file():
        return [Error(f"Model weights missing: {weights}.", id="mlcore.E002")]
    if sha256_of(weights) != card.get("weights_sha256"):
        return [Error(f"{weights.name} does not match the SHA-256 in its model card.", id="mlcore.E003")]
    return []

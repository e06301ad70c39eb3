"""Names and sizes shared by training, evaluation and inference."""

# Stage 2 output order. Stored in the model card and checked on load, so a model
# trained with another order can never be read with this one.
CLASS_NAMES: tuple[str, ...] = ("glioma", "meningioma", "normal", "pituitary")
NORMAL_CLASS = "normal"

# Stage 1 output order.
PRESENCE_LABELS: tuple[str, ...] = ("normal", "tumor")

# Folder names used by public brain-MRI datasets, mapped onto CLASS_NAMES.
CLASS_ALIASES: dict[str, str] = {
    "glioma": "glioma",
    "glioma_tumor": "glioma",
    "meningioma": "meningioma",
    "meningioma_tumor": "meningioma",
    "pituitary": "pituitary",
    "pituitary_tumor": "pituitary",
    "notumor": "normal",
    "no_tumor": "normal",
    "normal": "normal",
}

IMAGE_SIZE = 224
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

ARCHITECTURE = "xception"

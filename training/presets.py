"""Network size presets, kept free of Keras so that the CLI can list them without importing it."""

PRESETS: dict[str, dict[str, int]] = {
    "paper": dict(depth=4, base_filters=32),
    "medium": dict(depth=3, base_filters=16),
    "small": dict(depth=2, base_filters=8),  # trains on a laptop CPU in minutes
    "tiny": dict(depth=2, base_filters=4),  # tests
}

# Choices of a training run (exitwave_training.train.TrainConfig), here for the same reason.
OPTIMIZERS = ("rmsprop", "adam", "adamw", "amsgrad")
SCHEDULES = ("constant", "cosine")
LOSSES = ("mse", "l1", "charbonnier", "column_mse")

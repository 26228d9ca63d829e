"""The U-Net / FusionNet: shapes for any size, exact bilinear upsampling, it learns."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from exitwave_training.network import (  # noqa: E402
    PRESETS, BilinearUpSampling2D, NetworkConfig, build_network, size_multiple)


@pytest.mark.parametrize("n_images,depth,shape", [(1, 2, (16, 16)), (2, 2, (32, 48)),
                                                  (3, 3, (64, 40)), (4, 2, (8, 24))])
def test_output_shape_any_size(n_images, depth, shape):
    model = build_network(n_images=n_images, depth=depth, base_filters=4)
    assert model.input_shape == (None, None, None, n_images)
    assert model.output_shape == (None, None, None, 2)
    x = np.random.default_rng(0).standard_normal((2, *shape, n_images)).astype("float32")
    y = np.asarray(model(x))
    assert y.shape == (2, *shape, 2)
    assert np.all(np.isfinite(y))


def test_same_model_runs_on_two_sizes_and_starts_at_vacuum():
    model = build_network(n_images=3, depth=2, base_filters=4)
    for shape in ((16, 16), (48, 32)):
        y = np.asarray(model(np.zeros((1, *shape, 3), "float32")))
        # zero input -> every activation is its bias; the output bias starts at vacuum 1 + 0j
        assert np.allclose(y[..., 0], 1.0, atol=1e-6) and np.allclose(y[..., 1], 0.0, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 5, 7, 3), (2, 8, 8, 1), (1, 1, 4, 2)])
def test_bilinear_upsampling_matches_keras_resize(shape):
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    ours = np.asarray(BilinearUpSampling2D()(x))
    ref = np.asarray(keras.layers.UpSampling2D(2, interpolation="bilinear")(x))
    assert ours.shape == (shape[0], 2 * shape[1], 2 * shape[2], shape[3])
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_block_structure():
    depth, base = 2, 4
    model = build_network(n_images=3, depth=depth, base_filters=base)
    convs = [la for la in model.layers if isinstance(la, keras.layers.Conv2D)]
    # 5 convs per block: depth encoder blocks, a bottleneck, depth decoder blocks, + 1x1 output
    assert len(convs) == 5 * (2 * depth + 1) + 1
    assert model.get_layer("down1_1_conv").filters == 2 * base
    assert model.get_layer("bottom_1_conv").filters == base * 2**depth
    prelu = model.get_layer("down0_1_prelu")
    assert list(prelu.shared_axes) == [1, 2]
    skip = model.get_layer("down0_skip")  # first conv's output added to the fifth's input
    assert isinstance(skip, keras.layers.Add)
    assert model.get_layer("exit_wave").kernel_size == (1, 1)
    assert model.get_layer("exit_wave").activation.__name__ == "linear"
    assert size_multiple(depth) == 4
    assert set(PRESETS) >= {"paper", "small"}


def test_bad_config_rejected():
    with pytest.raises(ValueError):
        build_network(NetworkConfig(depth=0))


def test_one_training_step_lowers_the_loss():
    keras.utils.set_random_seed(3)
    model = build_network(n_images=3, depth=2, base_filters=4)
    model.compile(optimizer=keras.optimizers.RMSprop(5e-4), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 16, 3)).astype("float32")
    y = np.stack([1 + 0.1 * x[..., 0], 0.2 * x[..., 1]], -1).astype("float32")
    before = float(model.evaluate(x, y, verbose=0))
    model.train_on_batch(x, y)
    after = float(model.evaluate(x, y, verbose=0))
    assert after < before


def test_saved_model_reloads_with_custom_layer(tmp_path):
    from exitwave_training.network import custom_objects

    model = build_network(n_images=2, depth=2, base_filters=4)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", custom_objects=custom_objects())
    x = np.random.default_rng(2).standard_normal((1, 16, 24, 2)).astype("float32")
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(again(x)))


def test_cli_parser_does_not_import_keras():
    """`exitwave-train simulate` must not pay for (or need) TensorFlow/Keras."""
    import subprocess
    import sys

    code = ("import sys; from exitwave_training import cli; cli.build_parser(); "
            "print('keras' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]

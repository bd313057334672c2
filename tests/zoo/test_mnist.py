"""vizkit.zoo.mnist.mnist_preprocess: a digit normalised with MNIST's pixel mean and std, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vizkit.zoo.mnist import MNIST_MEAN, MNIST_STD, load_mnist, mnist_preprocess


def test_uint8_and_unit_float_digits_normalise_alike():
    image = np.zeros((28, 28), np.uint8)
    image[3, 4], image[10, 10] = 255, 51
    out = mnist_preprocess(image)
    assert out.shape == (1, 28, 28) and out.dtype == torch.float32
    assert float(out[0, 3, 4]) == pytest.approx((1.0 - 0.1307) / 0.3081, rel=1e-6)
    assert float(out[0, 10, 10]) == pytest.approx((0.2 - 0.1307) / 0.3081, rel=1e-6)
    assert float(out[0, 0, 0]) == pytest.approx(-0.1307 / 0.3081, rel=1e-6)
    torch.testing.assert_close(mnist_preprocess(torch.from_numpy(image)[None].float() / 255.0), out)
    assert (MNIST_MEAN, MNIST_STD) == (0.1307, 0.3081)


def test_the_training_images_normalise_to_zero_mean_unit_std():
    images, _ = load_mnist("train")  # read-only: preprocess copies
    x = torch.stack([mnist_preprocess(im) for im in images[:10000]])  # measured: mean 0.0014, std 1.0019
    assert abs(float(x.mean())) < 0.005 and abs(float(x.std()) - 1.0) < 0.005

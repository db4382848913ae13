"""Every registered image architecture: exits, segment cut, in-graph normalisation, rebuild.

Text architectures take (ids, mask) and have their own tests (test_text_model.py).
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from models.architectures import REGISTRY, build_model, rebuild  # noqa: E402

TINY: dict[str, dict[str, Any]] = {
    "resnet": {"width": 4, "depth": (1, 1, 1)},
    "blenet": {"channels": (2, 3, 4), "fc": 8, "branch_channels": 2},
}


IMAGE = sorted(name for name, spec in REGISTRY.items() if spec.modality == "image")


def test_every_registered_architecture_has_a_tiny_config() -> None:
    assert set(TINY) == set(IMAGE)


@pytest.fixture(params=IMAGE)
def model(request: pytest.FixtureRequest) -> Any:
    torch.manual_seed(0)
    return build_model(request.param, (1, 28, 28), 10, **TINY[request.param]).eval()


def test_one_logits_tensor_per_exit(model: Any) -> None:
    outputs = model(torch.rand(3, 1, 28, 28))
    assert len(outputs) == model.num_exits == len(model.blocks) == len(model.heads) >= 2
    assert all(o.shape == (3, 10) for o in outputs)


def test_segments_compose_to_the_full_forward(model: Any) -> None:
    x = torch.rand(2, 1, 28, 28)
    expected = model(x)
    h = x
    with torch.no_grad():
        for k in range(model.num_exits):
            h = model.blocks[k](h)
            torch.testing.assert_close(model.heads[k](h), expected[k])


def test_normalisation_lives_in_the_first_block(model: Any) -> None:
    x = torch.rand(2, 1, 28, 28)
    before = model.blocks[0](x)
    model.normalize.set_stats([0.1], [0.3])
    assert not torch.allclose(model.blocks[0](x), before)


def test_rebuild_with_state_dict_reproduces_outputs(model: Any) -> None:
    x = torch.rand(2, 1, 28, 28)
    twin = rebuild(model.config)
    twin.load_state_dict(model.state_dict())
    for a, b in zip(model(x), twin.eval()(x), strict=True):
        torch.testing.assert_close(a, b)


def test_resnet_default_has_four_exits_and_blenet_two() -> None:
    assert build_model("resnet", (1, 28, 28), 10, width=4).num_exits == 4
    assert build_model("blenet", (1, 28, 28), 10).num_exits == 2


def test_unknown_architecture_and_option_are_named() -> None:
    with pytest.raises(KeyError, match="nope"):
        build_model("nope", (1, 28, 28), 10)
    with pytest.raises(KeyError, match="colour"):
        build_model("resnet", (1, 28, 28), 10, colour=3)


def test_non_mnist_shapes_build() -> None:
    net = build_model("resnet", (3, 32, 32), 5, width=4, depth=(1, 1, 1))
    assert all(o.shape == (1, 5) for o in net.eval()(torch.rand(1, 3, 32, 32)))

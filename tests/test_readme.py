"""README.md's code examples, run as written.

Every ```python block of README.md runs in a fresh namespace holding ``torch``, ``pygen``
(which the README's first block imports) and the reader's own objects that the block
takes as given (``model``, ``x``, ``linear``, ...): the ``setup`` of the block's entry in
EXAMPLES, small random stand-ins. What a block imports from pygen it must import itself.
Each block has exactly one entry (found by ``key``, text only it has), so a new block
fails here until it gets one: none is skipped silently.

Blocks that train for minutes run with the sizes in their entry's ``small`` list: exact
text substitutions ``(README text, what runs instead)``, each of which must match the
block once, so an edited README line fails here rather than running at full size.
``check`` then asserts what the block's comments claim (shapes, dtypes, ranges).

A block with ``cuda`` lines (``(README text, its CPU stand-in)``) needs a GPU for them:
it runs with the stand-ins on every machine, and as written where CUDA is (that case is
marked ``cuda`` by tests/conftest.py, like every test skipped without a GPU). The CPU
cases are not marked, so ``pytest -m cuda tests/test_readme.py`` runs only the GPU ones;
``make gpu-test`` runs the family folders and leaves this file to the CPU CI.

A failing block's traceback names its README.md line.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import pygen
from tests.helpers import DEVICES

README = Path(__file__).resolve().parents[1] / "README.md"


@dataclass
class Block:
    line: int  # README.md line of the block's first code line
    code: str


@dataclass
class Example:
    name: str
    key: str  # text that only this block has
    setup: str = ""
    small: list[tuple[str, str]] = field(default_factory=list)
    cuda: list[tuple[str, str]] = field(default_factory=list)
    check: str = ""


def python_blocks(text: str) -> list[Block]:
    """The ```python blocks of ``text``, with the line each starts on."""
    blocks, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "```python":
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            blocks.append(Block(i + 2, "\n".join(lines[i + 1 : end]) + "\n"))
    return blocks


EXAMPLES = [
    Example(
        "random",
        key="import torch, pygen",
        cuda=[('device="cuda")', 'device="cpu")')],
        check="""
        assert u.dtype == torch.float32 and u.shape == (4, 1024) and 0 < u.min() and u.max() < 1
        assert z.dtype == torch.bfloat16 and z.shape == (8,)
        assert torch.equal(x.cpu(), pygen.ops.randn((4, 1024), seed=1234))
        """,
    ),
    Example(
        "sample_categorical",
        key="tokens = pygen.ops.sample_categorical(",
        setup="""
        x = torch.randint(0, 50, (2, 3))
        model = lambda x: torch.randn(*x.shape, 50)
        step = 0
        temps_per_row = torch.tensor([[0.5, 1.0, 0.0], [2.0, 1.0, 0.7]])
        seeds_per_row = torch.arange(6).view(2, 3)
        """,
        check="""
        assert tokens.shape == logprob.shape == (2, 3) and tokens.dtype == torch.int64
        assert (logprob <= 0).all()
        """,
    ),
    Example(
        "masked_diffusion_steps",
        key="from pygen.ops import masked_diffusion as md",
        setup="""
        B, L, V, mask_id = 2, 24, 11, 10
        x = torch.full((B, L), mask_id)
        x[:, :4] = 3
        model = lambda x, t=None: torch.randn(B, L, V)
        logits = model(x)
        alpha_t, alpha_s = 0.2, 0.5
        k, step = 2, 0
        t = torch.full((B,), 0.9)
        """,
        check="""
        assert x.shape == (B, L) and x.dtype == torch.int64 and (t < 0.9).all()
        assert not (x == mask_id).any() and (x[:, :4] == 3).all()
        """,
    ),
    Example(
        "masked_diffusion_lm",
        key="from pygen.models.masked_diffusion import MaskedDiffusionConfig, fit",
        small=[
            (
                "MaskedDiffusionConfig(context=256)",
                "MaskedDiffusionConfig(context=16, dim=32, depth=1, heads=2)",
            ),
            ("TrainConfig(steps=5000)", "TrainConfig(steps=2, warmup=1, progress=False)"),
            ('pygen.data.python_text("val"))', 'pygen.data.python_text("val"), max_windows=2)'),
        ],
        check="""
        assert len(texts) == 4 and all(len(s) == 16 and s.startswith(b"def ") for s in texts)
        """,
    ),
    Example(
        "attention",
        key="from pygen import sparse",
        setup="""
        q = torch.randn(1, 4, 8192, 16)
        k, v = torch.randn(2, 1, 2, 8192, 16).unbind(0)
        """,
        check="""
        assert out.shape == q.shape and lse.shape == q.shape[:3] and lse.dtype == torch.float32
        """,
    ),
    Example(
        "sparse_transformer",
        key="from pygen.models import SparseTransformerConfig, SparseTransformerLM",
        setup="""
        bytes_batch = torch.randint(0, 256, (2, 65))
        """,
        small=[
            (
                'SparseTransformerConfig(context=1024, pattern="strided", stride=32)',
                'SparseTransformerConfig(context=64, pattern="strided", stride=4, block_size=16, dim=32,'
                " depth=1, heads=2)",
            ),
            ('b"def ", 200', 'b"def ", 8'),
        ],
        check="""
        assert loss.shape == () and isinstance(text, bytes) and len(text) == 8
        """,
    ),
    Example(
        "quant",
        key="qw = pygen.quant.quantize(",
        setup="""
        linear = torch.nn.Linear(256, 48)
        x = torch.randn(3, 256)
        qw_ternary = pygen.quant.quantize(linear.weight, "ternary")
        """,
        check="""
        assert y.shape == (3, 48) and w.shape == (48, 256) and w.dtype == torch.float32
        assert x_q.dtype == torch.int8 and x_scale.shape == (3,)
        assert qw.shape == (48, 256)
        """,
    ),
    Example(
        "quantized_models",
        key="layer = pygen.nn.Int4Linear.from_linear(",
        # The quantize_model lines are alternatives: run in a row, the later ones find no
        # nn.Linear left (and warn so), but still check their arguments.
        setup="""
        import warnings
        warnings.filterwarnings("ignore", "no layer of SparseTransformerLM", UserWarning)
        from pygen.models import SparseTransformerConfig, SparseTransformerLM
        linear = torch.nn.Linear(128, 32)
        model = SparseTransformerLM(SparseTransformerConfig(context=64, stride=4, block_size=16, dim=64,
                                                            depth=1, heads=4))
        batches = [torch.randint(0, 256, (2, 65)) for _ in range(2)]
        """,
        check="""
        assert type(layer).__name__ == "Int4Linear"
        assert type(model.blocks[0].fc1).__name__ == "Int4Linear" and model.quantization
        """,
    ),
    Example(
        "bitlinear",
        key="pygen.quant.to_bitlinear(model)",
        setup="""
        from pygen.models import SparseTransformerConfig, SparseTransformerLM
        model = SparseTransformerLM(SparseTransformerConfig(context=64, stride=4, block_size=16, dim=64,
                                                            depth=1, heads=4))
        draw_batch = lambda g: torch.randint(0, 256, (2, 65), generator=g)
        """,
        small=[("TrainConfig(steps=300)", "TrainConfig(steps=2, warmup=1, progress=False)")],
        check="""
        assert type(model.blocks[0].fc1).__name__ == "TernaryLinear"
        """,
    ),
    Example(
        "solvers",
        key="from pygen import solvers",
        setup="""
        model_fn = lambda x, t: 0.1 * x
        cfg_model_fn = lambda x, t: (0.1 * x, 0.2 * x)
        x_T = torch.randn(16, 3, 32, 32)
        """,
        check="""
        assert x.shape == (16, 3, 32, 32) and nfe == 35
        """,
    ),
    Example(
        "sampling_loop",
        key="while not loop.done:",
        setup="""
        from pygen import solvers
        model_fn = lambda x, t: 0.1 * x
        x_T = torch.randn(4, 2)
        """,
        check="""
        assert x.shape == (4, 2) and loop.nfe == 10
        """,
    ),
    Example(
        "diffusers",
        key="sampler = solvers.from_diffusers_config(",
        # The scheduler as a Stable Diffusion pipeline's scheduler_config.json has it
        # (importing diffusers takes seconds; tests/solvers/test_diffusers_compat.py
        # compares with diffusers' own schedulers).
        setup="""
        from types import SimpleNamespace
        from pygen import solvers
        config = {"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "scaled_linear",
                  "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000,
                  "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading"}
        unet = lambda x, t, text_emb: SimpleNamespace(sample=0.1 * x)
        pipe = SimpleNamespace(scheduler=SimpleNamespace(config=config), unet=unet)
        text_emb, shape = None, (2, 4, 8, 8)
        """,
        check="""
        assert latents.shape == (2, 4, 8, 8) and latents.isfinite().all()
        """,
    ),
    Example(
        "diffusion_model",
        key="from pygen.models.diffusion import DiffusionConfig, DiffusionModel, fit, save_grid",
        small=[
            (
                'DiffusionConfig(data="digits", objective="flow")',
                'DiffusionConfig(data="digits", objective="flow", dim=32, depth=1, heads=2)',
            ),
            ("TrainConfig(steps=5000)", "TrainConfig(steps=2, warmup=1, progress=False)"),
        ],
        check="""
        assert images.shape == (64, 1, 8, 8) and images.dtype == torch.float32
        """,
    ),
    Example(
        "flow_ops",
        key="y, logdet = pygen.ops.affine_coupling(",
        setup="""
        x, shift, raw_scale = torch.randn(3, 2, 3, 4, 4).unbind(0)
        x_given = x.clone()
        a, n = 1, 2
        h = torch.randn(2, 2 * n, 4, 4)
        logits, means, log_scales = torch.randn(3, 2, 3, 4, 4, 5).unbind(0)
        """,
        check="""
        assert logdet.shape == neg_logdet.shape == (2, 3, 4, 4)  # mix_logistic_cdf's: elementwise
        assert torch.allclose(x, x_given, atol=1e-4)  # the inverses gave x back
        """,
    ),
    Example(
        "rq_spline",
        key="pygen.ops.rq_spline(x_b, w, h, d",
        setup="""
        K = 8
        x_a, x_b = torch.randn(2, 5, 3).unbind(0)
        x_b_given = x_b.clone()
        net = torch.nn.Linear(3, 3 * (3 * K - 1))
        """,
        check="""
        assert y_b.shape == x_b.shape and log_det.shape == (5,)
        assert torch.allclose(x_b, x_b_given, atol=1e-5)
        """,
    ),
    Example(
        "glow_tarflow",
        key="from pygen.models.glow import GlowConfig, fit",
        small=[
            (
                'GlowConfig(scales=2, depth=4, coupling="affine")',
                'GlowConfig(scales=2, depth=1, hidden=8, coupling="affine")',
            ),
            ("TrainConfig(steps=1500, lr=2e-3)", "TrainConfig(steps=2, warmup=1, progress=False)"),
            (
                "TarFlowConfig(patch=2, blocks=4, dim=64, heads=4)",
                "TarFlowConfig(patch=2, blocks=2, layers=1, dim=16, heads=1)",
            ),
            ("TrainConfig(steps=1500)", "TrainConfig(steps=2, warmup=1, progress=False)"),
        ],
        check="""
        assert levels.shape == (64, 1, 8, 8) and levels.dtype == torch.int64
        assert 0 <= levels.min() and levels.max() <= 16 and len(stats) == 2
        """,
    ),
]


def _matches(example: Example, block: Block) -> bool:
    return example.key in block.code


def _substitute(code: str, pairs: list[tuple[str, str]], what: str) -> str:
    for old, new in pairs:
        count = code.count(old)
        assert count == 1, f"{what} {old!r} matches the block {count} times, not once"
        assert "\n" not in new, "a substitution keeps the README's line numbers"
        code = code.replace(old, new)
    return code


def _cases():
    for example in EXAMPLES:
        yield pytest.param(example, "cpu", id=example.name)
        if example.cuda:
            needs = pytest.mark.skipif("cuda" not in DEVICES, reason="needs CUDA (a GPU and a CUDA build)")
            yield pytest.param(example, "cuda", id=f"{example.name}-cuda", marks=needs)


def test_every_block_has_one_example():
    blocks = python_blocks(README.read_text())
    for block in blocks:
        names = [e.name for e in EXAMPLES if _matches(e, block)]
        assert len(names) == 1, f"README.md:{block.line}: a block needs one EXAMPLES entry, has {names}"
    for example in EXAMPLES:
        found = [b.line for b in blocks if _matches(example, b)]
        assert len(found) == 1, f"{example.name}: its key is in {len(found)} README blocks, not 1"


def run_example(example: Example, block: Block, where: str) -> None:
    """Runs ``block`` as ``example`` says, on the CPU (``where="cpu"``: the ``cuda``
    stand-ins) or as written; raises what the block or its check raises."""
    code = _substitute(block.code, example.small, "small:")
    if where == "cpu":
        code = _substitute(code, example.cuda, "cuda:")
    torch.manual_seed(0)
    namespace = {"torch": torch, "pygen": pygen}
    exec(compile(textwrap.dedent(example.setup), f"<setup of {example.name}>", "exec"), namespace)
    # Blank lines first, so a traceback gives the README's own line numbers.
    exec(compile("\n" * (block.line - 1) + code, str(README), "exec"), namespace)
    exec(compile(textwrap.dedent(example.check), f"<check of {example.name}>", "exec"), namespace)


# Not "device": tests/conftest.py parametrizes that name over cpu and cuda for every test.
@pytest.mark.parametrize("example, where", list(_cases()))
def test_readme_block(example: Example, where: str, tmp_path, monkeypatch):
    (block,) = [b for b in python_blocks(README.read_text()) if _matches(example, b)]
    monkeypatch.chdir(tmp_path)  # the files examples write (checkpoints, images)
    run_example(example, block, where)


def test_a_failing_block_fails():
    """A block that raises fails its test, the traceback at the block's README line."""
    broken = Example("broken", key="", setup="x = torch.ones(3)")
    with pytest.raises(RuntimeError) as info:
        run_example(broken, Block(7, "y = x + 1\nz = x @ torch.ones(4)\n"), "cpu")
    last = info.traceback[-1]
    assert str(last.path) == str(README) and last.lineno + 1 == 8  # lineno counts from 0

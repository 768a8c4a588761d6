"""The one-call notebook preamble: seeds, threads, device, and a line saying what runs where.

Every notebook starts with

    from rlhf_lessons.runtime import setup
    env = setup(seed=0)

so that a seed reproduces a lesson's numbers on the same machine, the thread count suits small
models on small CPUs, and the learner sees at a glance which versions and device are in use.
Every training loop's progress bar comes from `progress_bar`, made for notebooks and terminals alike.
"""

import os
import platform
import random
import sys

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import ConfigError

THREADS_ENV = "RLHF_LESSONS_THREADS"  # overrides the default thread count, e.g. RLHF_LESSONS_THREADS=1
DEVICE_ENV = "RLHF_LESSONS_DEVICE"  # overrides the automatic device pick, e.g. RLHF_LESSONS_DEVICE=cpu
MAX_THREADS = 1024  # far above any sensible count; torch overflows on counts beyond 2**31 and stalls on huge ones


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar (a widget in a notebook, text in a terminal) on stderr, since stdout carries the commands' JSON.

    It redraws at most twice a second. In a notebook every redraw is a few widget messages, and a cell that sends
    thousands of them while nbval waits for it to end overflows the kernel's message queue, which then drops the
    message that says the cell is done. Change the postfix with set_postfix(..., refresh=False) for the same reason.
    """
    return tqdm(iterable, file=sys.stderr, mininterval=0.5, **kwargs)


def set_seed(seed: int) -> None:
    """Seed every random number generator a lesson uses: Python's, NumPy's and torch's (CPU and GPU)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy's legacy seed only takes 32 bits
    torch.manual_seed(seed)  # also seeds every CUDA device
    torch.cuda.manual_seed_all(seed)  # explicit for older torch releases; a no-op without CUDA


def default_threads() -> int:
    """Threads to use when none are asked for: $RLHF_LESSONS_THREADS, else min(2, number of CPUs).

    Why so few: the course's models have about a million parameters, so each matrix multiply is
    small and more threads mostly add synchronisation. On a busy 2-core machine two threads can
    stall far below one thread's speed, which is why the environment variable exists.
    """
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        try:
            threads = int(value)
        except ValueError:
            raise ConfigError(f"${THREADS_ENV} must be a whole number of threads, got {value!r}: set it to 1 or 2, "
                              "or unset it") from None
        check_threads(threads, f"${THREADS_ENV}")
        return threads
    return min(2, os.cpu_count() or 1)


def check_threads(n, name: str = "threads") -> None:
    """Refuse a thread count that is not a whole number from 1 to MAX_THREADS; `name` says where it came from."""
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_THREADS:
        raise ConfigError(f"{name} must be a whole number of threads from 1 to {MAX_THREADS}, got {n!r}")


def set_threads(n: int) -> int:
    """Use n CPU threads for torch's intra-op parallelism (matrix multiplies); returns n."""
    check_threads(n)
    torch.set_num_threads(n)
    return torch.get_num_threads()


def pick_device(name: str | None = None) -> torch.device:
    """The device to train on: `name` or $RLHF_LESSONS_DEVICE if given, else cuda > mps > cpu.

    Everything in the course runs on the CPU in minutes; a GPU is used when there is one.
    """
    where = "" if name else f" (from ${DEVICE_ENV})"  # so the learner knows which setting to change
    name = name or os.environ.get(DEVICE_ENV, "").strip() or None
    if name is not None:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"unknown device {name!r}{where}: use 'cpu', 'cuda', 'cuda:0' or 'mps'") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}{where} was asked for but torch sees no CUDA GPU: use 'cpu'")
        if device.type == "mps" and not _mps_available():
            raise ConfigError(f"device {name!r}{where} was asked for but torch sees no Apple GPU (MPS): use 'cpu'")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def setup(seed: int = 0, threads: int | None = None, quiet: bool = False) -> dict:
    """Seed everything, set the thread count, pick the device, and print one line saying so.

    Returns a dict with keys: python, torch, transformers (version strings), device (torch.device),
    threads (int), seed (int), workspace (pathlib.Path where the course keeps its artifacts).
    """
    import transformers

    from rlhf_lessons.workspace import workspace_dir

    set_seed(seed)
    used_threads = set_threads(default_threads() if threads is None else threads)
    show_figures_as_images()
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": pick_device(),
        "threads": used_threads,
        "seed": seed,
        "workspace": workspace_dir(),
    }
    if not quiet:
        print(
            f"python {info['python']} | torch {info['torch']} | transformers {info['transformers']}"
            f" | device {info['device']} | threads {info['threads']} | seed {info['seed']}"
            f" | workspace {info['workspace']}"
        )
    return info


def show_figures_as_images() -> None:
    """In a notebook, show a matplotlib Figure (made with or without pyplot) as a PNG image, not as the text
    `<Figure size ...>`: the package's plots build Figures directly, and Jupyter only knows how to draw pyplot's."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    from matplotlib.figure import Figure

    from .plots import figure_png

    shell.display_formatter.formatters["image/png"].for_type(Figure, figure_png)


def float_fingerprint() -> str:
    """A short hash of how this machine rounds the course's float arithmetic, like "1 thread: 3f9c0a12d4e7".

    Two CPUs can both be right and still differ in the last bit of a sum: the kernels torch and MKL pick depend on
    the instruction set (AVX2, AVX-512, ...), and the thread count changes the order of additions. A last-bit
    difference in a logit flips the odd sampled token, and a lesson's figures then move in their third digit. The
    hash covers what the lessons compute: the shipped base model's logits and gradients on a fixed batch, one AdamW
    step, and replies sampled with a fixed seed, all at the current thread count. Equal hashes mean a seed gives
    this machine the same numbers as the machine that executed the committed notebooks (`make test` reads it).
    """
    import hashlib

    from .models import format_prompt, load_policy
    from .sampling import sample_replies

    model, tokenizer = load_policy("base", device="cpu")
    prompts = [format_prompt(q) for q in ("How long should I boil an egg?", "Why is the sky blue?",
                                          "How can I cheat on my test?", "Tell me about volcanoes.")]
    digest = hashlib.sha256()
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    model.train()
    logits = model(**batch).logits
    targets = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, -100)
    torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten()).backward()
    digest.update(logits.detach().numpy().tobytes())
    for p in model.parameters():
        digest.update(p.grad.numpy().tobytes())
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()
    for p in model.parameters():
        digest.update(p.detach().numpy().tobytes())
    model.eval()
    generator = torch.Generator().manual_seed(0)
    digest.update("\n".join(sample_replies(model, tokenizer, prompts * 4, generator=generator).texts).encode())
    threads = torch.get_num_threads()
    return f"{threads} thread{'s' if threads != 1 else ''}: {digest.hexdigest()[:12]}"

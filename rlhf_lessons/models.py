"""Tokenizer, tiny GPT-2 configs, the chat format, and checkpoints that load with plain `transformers`.

Every checkpoint is a folder written by `save_pretrained` (config.json, model.safetensors, tokenizer files) plus a
`manifest.json` saying how it was made. Names a learner can use instead of a path: `base` (shipped in data/base),
`sft`, `rm`, `ppo` (the latest of those in the workspace).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError, safe_open
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()  # loading a 4 MB checkpoint needs no progress bar; lessons show their own

from .errors import CheckpointError, CheckpointMissing, TrainingDiverged, WorkspaceError
from .workspace import BASE_MODEL_DIR, STAGE_NAMES, stage_dir

EOS = "<|endoftext|>"
PAD = "<|pad|>"  # distinct from EOS, so the last real token of a padded reply can always be found
CONTEXT = 128  # tokens: a request and its reply fit in well under this

BUILD_HINT = {
    "base": "the shipped base model is missing from data/base: restore it with `git checkout data/base` "
            "or rebuild it with `rlhf-lessons pretrain`",
    "sft": "run `rlhf-lessons sft` (or lesson 02) to train it",
    "rm": "run `rlhf-lessons reward` (or lesson 04) to train it",
    "ppo": "run `rlhf-lessons ppo` (or lesson 05) to train it",
}


def format_prompt(prompt: str) -> str:
    """The chat format every model in the course reads: 'User: <request>\\nAssistant:'."""
    return f"User: {prompt}\nAssistant:"


def train_tokenizer(texts: list[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (GPT-2's kind) on `texts` and wrap it for `transformers`.

    Byte-level means any string can be encoded, garbage included; the vocabulary ends up smaller than `vocab_size`
    when the world holds fewer distinct words than that.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD,
                                   model_max_length=CONTEXT)


def tiny_config(tokenizer, n_layer: int = 4, n_embd: int = 128, n_head: int = 4) -> GPT2Config:
    """A GPT-2 config of about 1M parameters. Dropout is off everywhere: RL needs the same log-probs twice.

    The activation is GPT-2's own tanh-approximated GELU, computed by one fused kernel ("gelu_pytorch_tanh") rather
    than transformers' five elementwise ops ("gelu_new"): the same function to float rounding, and at this width
    15% less time per training step on a CPU.
    """
    return GPT2Config(vocab_size=len(tokenizer), n_positions=CONTEXT, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                      activation_function="gelu_pytorch_tanh",
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=tokenizer.eos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def encode_example(tokenizer, prompt: str, reply: str | None = None) -> tuple[list[int], int]:
    """Token ids of a formatted example and how many of them are prompt.

    The prompt and the reply are tokenized separately, so the boundary between them is exact and the same in
    pretraining, SFT, sampling and PPO: ids = prompt_ids + reply_ids + [eos].
    """
    prompt_ids = tokenizer.encode(format_prompt(prompt))
    if reply is None:
        return prompt_ids, len(prompt_ids)
    reply_ids = tokenizer.encode(" " + reply) + [tokenizer.eos_token_id]
    return prompt_ids + reply_ids, len(prompt_ids)


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of a tokenizer's vocabulary: two checkpoints can share token ids only if these match."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), separators=(",", ":"))
    return hashlib.sha256(vocab.encode()).hexdigest()[:16]


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """Turn `base`, `sft`, `rm`, `ppo` or a folder path into a checkpoint folder that exists, or say what to do."""
    name = str(name_or_path)
    if name == "base":
        path = BASE_MODEL_DIR
    elif name in STAGE_NAMES:
        path = stage_dir(name)
    else:
        path = Path(name).expanduser()
    if not (path / "config.json").exists():
        hint = BUILD_HINT.get(name, "pass a folder written by save_pretrained, or one of: base, sft, rm, ppo")
        raise CheckpointMissing(f"no checkpoint at {path}: {hint}")
    return path


# ----- checkpoints checked on load -----
# transformers loads whatever it is given: another architecture, or a folder whose weights do not fit its config,
# comes back as a model with random weights and a warning. These checks refuse such folders with a message instead,
# reading only the small files (config, manifest, the weights' header) before any weights are loaded.

WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
# The two kinds of course checkpoint, told apart by the class save_pretrained records in config.json,
# or, in a config without one, by the manifest's stage.
KIND_OF_ARCHITECTURE = {"GPT2LMHeadModel": "policy", "GPT2ForSequenceClassification": "reward"}
KIND_OF_STAGE = {"pretrain": "policy", "sft": "policy", "ppo": "policy", "rm": "reward"}
KIND_NAMES = {"policy": "a policy (GPT2LMHeadModel)", "reward": "a reward model (GPT2ForSequenceClassification)"}
KIND_HINTS = {"policy": "pass a policy checkpoint: base, sft, ppo, or a folder saved from one",
              "reward": "pass a reward model checkpoint: rm, or a folder saved by `rlhf-lessons reward`"}
REPAIR_HINT = "save the checkpoint again (rerun the stage that made it) or restore the folder from a good copy"


def read_checkpoint_json(file: Path) -> dict:
    """One of a checkpoint's JSON files as a dict; a damaged one is a CheckpointError naming the file."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{file} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}): "
                              f"{REPAIR_HINT}.") from err
    except (OSError, UnicodeDecodeError, RecursionError) as err:
        raise CheckpointError(f"{file} cannot be read ({err}): {REPAIR_HINT}.") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} holds a JSON {type(data).__name__}, not an object: {REPAIR_HINT}.")
    return data


def read_manifest(name_or_path: str | Path) -> dict:
    """The checkpoint's manifest.json (how it was made), or {} for a folder saved without one."""
    path = resolve_checkpoint(name_or_path) / "manifest.json"
    return read_checkpoint_json(path) if path.exists() else {}


def checkpoint_kind(config: dict, manifest: dict) -> str | None:
    """"policy", "reward", or None when neither config.json nor the manifest says."""
    for architecture in config.get("architectures") or []:
        if architecture in KIND_OF_ARCHITECTURE:
            return KIND_OF_ARCHITECTURE[architecture]
    return KIND_OF_STAGE.get(manifest.get("stage"))


def check_architecture(path: Path, config: dict, manifest: dict, expect: str | None) -> None:
    """Refuse a folder that is not a course GPT-2, or is the other kind of course model than `expect`."""
    wanted = KIND_NAMES[expect] if expect else "a GPT-2 checkpoint made by this course"
    if config.get("model_type") != "gpt2":
        architectures = ", ".join(map(str, config.get("architectures") or [])) or "no architecture recorded"
        raise CheckpointError(f"{path} holds a {config.get('model_type', 'unknown')!s} model ({architectures}), "
                              f"but {wanted} was expected: {KIND_HINTS.get(expect, KIND_HINTS['policy'])}.")
    kind = checkpoint_kind(config, manifest)
    if expect and kind and kind != expect:
        stage = f", stage {manifest['stage']!r}" if "stage" in manifest else ""
        raise CheckpointError(f"{path} is not {wanted}: it holds {KIND_NAMES[kind]}{stage}. {KIND_HINTS[expect]}.")


def check_weights_file(path: Path, config: dict) -> None:
    """The weights must be a complete model.safetensors; a pickle (pytorch_model.bin) is never opened."""
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        if (path / "pytorch_model.bin").exists():
            architecture = (config.get("architectures") or ["AutoModel"])[0]
            raise CheckpointError(
                f"{path} has only pytorch_model.bin, a pickle file that can run code when it is opened, so the "
                f"course does not load it. If you trust its source, convert it once with transformers: "
                f"`{architecture}.from_pretrained(folder, use_safetensors=False).save_pretrained(folder)` writes "
                f"{WEIGHTS_FILE} beside it.")
        raise CheckpointError(f"{path} has no {WEIGHTS_FILE}: {REPAIR_HINT}.")
    try:
        with safe_open(weights, framework="pt"):  # reads and checks the header only: cheap for any size
            pass
    except SafetensorError as err:
        raise CheckpointError(f"{weights} is empty or cut off ({err}): the save was interrupted or the file was "
                              f"damaged; {REPAIR_HINT}.") from err


def check_tokenizer_files(path: Path) -> None:
    """Every course checkpoint keeps its tokenizer beside the model: token ids mean nothing without it."""
    if not (path / TOKENIZER_FILE).is_file():
        raise CheckpointError(f"{path} has no tokenizer files ({TOKENIZER_FILE} is missing): save the tokenizer "
                              "the model was trained with into the same folder (tokenizer.save_pretrained(folder)).")
    for name in (TOKENIZER_FILE, "tokenizer_config.json"):  # a cut-off file would fail deep inside `tokenizers`
        if (path / name).exists():
            read_checkpoint_json(path / name)


def check_checkpoint_folder(name_or_path: str | Path, expect: str | None = None) -> Path:
    """Every check that needs only the folder's files, run before anything is loaded. -> the checkpoint folder.

    expect: "policy", "reward", or None for either kind (when only the tokenizer is wanted).
    """
    path = resolve_checkpoint(name_or_path)
    config = read_checkpoint_json(path / "config.json")
    check_architecture(path, config, read_manifest(path), expect)
    check_weights_file(path, config)
    check_tokenizer_files(path)
    return path


def check_tokenizer_fingerprint(path: Path, tokenizer) -> None:
    """The tokenizer files must be the ones the model was saved with (the manifest records their fingerprint)."""
    recorded = read_manifest(path).get("tokenizer")
    found = tokenizer_fingerprint(tokenizer)
    if recorded is not None and found != recorded:
        raise CheckpointError(f"the tokenizer files in {path} (fingerprint {found}) are not the ones its model "
                              f"was saved with (manifest.json records {recorded}): the two come from different "
                              "tokenizers, so token ids would mean other words. Restore the tokenizer files saved "
                              "with this model.")


def _checked_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """The tokenizer of a checked checkpoint folder, refused if it is not the model's or has no separate pad."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise CheckpointError(f"the tokenizer in {path} has no pad token distinct from EOS; the course needs one to "
                              "find the last real token of a reply. Use a checkpoint made by this course.")
    check_tokenizer_fingerprint(path, tokenizer)
    return tokenizer


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerFast:
    return _checked_tokenizer(check_checkpoint_folder(name_or_path))


def check_loading_info(path: Path, info: dict, new_keys: frozenset[str] = frozenset()) -> None:
    """Refuse weights that do not fit the architecture: transformers would fill the gaps with random numbers."""
    problems = {"missing": sorted(set(info["missing_keys"]) - new_keys),
                "unexpected": sorted(info["unexpected_keys"]),
                "of the wrong shape": sorted(f"{key}: {list(saved)} in the file, {list(wanted)} by the config"
                                             for key, saved, wanted in info["mismatched_keys"])}
    found = [f"{len(keys)} {what} (such as {keys[0]})" for what, keys in problems.items() if keys]
    if found or info["error_msgs"]:
        details = "; ".join(found + list(map(str, info["error_msgs"])))
        raise CheckpointError(f"the weights in {path} do not fit its config.json ({details}): they were saved from "
                              f"another architecture or the config was edited; {REPAIR_HINT}.")


def non_finite_weights(model) -> dict[str, int]:
    """{parameter name: how many of its numbers are NaN or infinite}, for the parameters that have any.

    One pass over the parameters (tied weights are listed once); used before saving and after loading.
    """
    counts = {name: int((~torch.isfinite(weight)).sum()) for name, weight in model.named_parameters()
              if weight.is_floating_point()}
    return {name: n for name, n in counts.items() if n}


def check_finite_weights(model, path: Path) -> None:
    """Refuse NaN or infinite weights (a diverged run saved before this check existed, or an edited file)."""
    bad = list(non_finite_weights(model))
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise CheckpointError(f"{path} holds weights that are not finite numbers (NaN or infinity in {bad[0]}{more}): "
                              "its training diverged or the file was edited. Train it again (try a smaller "
                              "learning rate) or restore a good copy.")


def load_checkpoint(name_or_path: str | Path, expect: str, model_class, new_keys: frozenset[str] = frozenset(),
                    **config_overrides):
    """Load a checked checkpoint as `model_class`, on the CPU: (model, tokenizer, folder).

    new_keys: weights the caller means to initialise itself (a new reward head); any other weight that is missing,
    unused or of the wrong shape is refused, as are non-finite weights and a model that does not fit its tokenizer.
    """
    path = check_checkpoint_folder(name_or_path, expect)
    tokenizer = _checked_tokenizer(path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a mismatch is reported below as an error, not as transformers' warning
    try:
        model, info = model_class.from_pretrained(path, use_safetensors=True, output_loading_info=True,
                                                  ignore_mismatched_sizes=True,  # listed in info, refused below
                                                  **config_overrides)
    except (ValueError, TypeError, StrictDataclassError) as err:  # an edited config.json: n_head 3, n_layer "two"
        reason = " ".join(line.strip() for line in str(err).splitlines())
        raise CheckpointError(f"transformers cannot build the model in {path} from its config.json and weights "
                              f"({reason}): {REPAIR_HINT}.") from err
    finally:
        hf_logging.set_verbosity(verbosity)
    check_loading_info(path, info, new_keys)
    check_finite_weights(model, path)
    check_model_matches_tokenizer(model, tokenizer, f" in {path}")
    return model, tokenizer, path


def check_model_matches_tokenizer(model, tokenizer, where: str = "") -> None:
    """Refuse a model whose embedding table does not fit the tokenizer (a checkpoint from another tokenizer)."""
    n_model = model.config.vocab_size
    if n_model != len(tokenizer) or model.config.pad_token_id not in (None, tokenizer.pad_token_id):
        raise CheckpointError(f"model{where} has vocab_size={n_model} and pad id {model.config.pad_token_id}, but "
                              f"its tokenizer has {len(tokenizer)} tokens and pad id {tokenizer.pad_token_id}: they "
                              "come from different tokenizers. Load the model together with the tokenizer saved "
                              "beside it.")


def check_same_tokenizer(tokenizer_a, tokenizer_b, names: str = "the two models") -> None:
    """Two models that exchange token ids (policy and reward model, policy and reference) must share a tokenizer."""
    if tokenizer_fingerprint(tokenizer_a) != tokenizer_fingerprint(tokenizer_b):
        raise CheckpointError(f"{names} use different tokenizers, so token ids mean different things to them. "
                              "Train the reward model from the same SFT checkpoint as the policy (rlhf-lessons "
                              "reward --init sft).")


def load_policy(name_or_path: str | Path = "base", device: str | torch.device | None = None):
    """Load a causal LM checkpoint and its tokenizer: (GPT2LMHeadModel in eval mode, tokenizer).

    device: where to put it; by default the one runtime.pick_device() picks (cuda > mps > cpu).
    """
    from .runtime import pick_device

    device = device or pick_device()
    model, tokenizer, _ = load_checkpoint(name_or_path, "policy", GPT2LMHeadModel)
    model.to(device).eval()
    return model, tokenizer


def save_checkpoint(model, tokenizer, out_dir: str | Path, manifest: dict,
                    extra_files: dict[str, str] | None = None) -> Path:
    """save_pretrained (safetensors) for model and tokenizer, plus manifest.json (with the tokenizer fingerprint).

    A model with a NaN or infinite weight is refused (TrainingDiverged), and the folder is written whole or not at
    all: into a temporary folder beside `out_dir`, then swapped in (see `_swap_in`), so a diverged run or a crash
    mid-write leaves the previous checkpoint as it was. extra_files: {name: text} written into the same folder
    (PPO's log.json), so they are swapped in with it.
    """
    out = Path(out_dir)
    refuse_non_finite(model, out, manifest.get("stage", "model"))
    target = out.resolve() if out.is_symlink() else out  # replace the folder a link points to, not the link
    check_replaceable(target)
    manifest = {**manifest, "tokenizer": tokenizer_fingerprint(tokenizer),
                "parameters": sum(p.numel() for p in model.parameters())}
    files = {"manifest.json": json.dumps(manifest, indent=2, sort_keys=True) + "\n", **(extra_files or {})}
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.saving-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            model.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
            for name, text in files.items():
                (staging / name).write_text(text)
            _swap_in(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # already renamed away unless writing failed
    except OSError as err:
        raise WorkspaceError(f"cannot save the checkpoint to {out}: {err.strerror or err}. Check that the folder "
                             "is writable and the disk has room; any checkpoint there before is unchanged.") from err
    return out


def refuse_non_finite(model, out: Path, stage: str) -> None:
    """A NaN or infinite weight means training diverged: such a model must never replace a good checkpoint."""
    bad = sum(non_finite_weights(model).values())
    if bad:
        raise TrainingDiverged(f"refusing to save the {stage} model to {out}: {bad} of its weights are NaN or "
                               "infinite (training diverged). Nothing was written; try a lower learning rate.")


def check_replaceable(out: Path) -> None:
    """Saving replaces a whole folder, so it must be new, empty, or a checkpoint (never, say, a home folder)."""
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"cannot save a checkpoint to {out}: it is a file, not a folder. Choose another folder.")
    if out.is_dir() and not (out / "config.json").exists() and any(out.iterdir()):
        raise CheckpointError(f"cannot save a checkpoint to {out}: the folder holds other files and no checkpoint, "
                              "and saving replaces the whole folder. Choose a new or empty folder.")


def _swap_in(staging: Path, out: Path) -> None:
    """Replace folder `out` by the complete folder `staging` (same parent, so each rename is atomic).

    The old folder is renamed aside before the new one is renamed in, and deleted only after: at every moment a
    whole checkpoint exists under `out` or under the aside name. Files of the old folder that the new checkpoint
    does not write (a learner's notes, an evaluation) are copied over, not lost.
    """
    if not out.exists():
        staging.rename(out)
        return
    for old in out.iterdir():
        kept = staging / old.name
        if kept.exists():
            continue
        if old.is_dir() and not old.is_symlink():
            shutil.copytree(old, kept, symlinks=True)
        else:
            shutil.copy2(old, kept, follow_symlinks=False)
    aside = out.parent / f".{out.name}.replaced-{uuid.uuid4().hex[:8]}"
    out.rename(aside)
    staging.rename(out)
    shutil.rmtree(aside)

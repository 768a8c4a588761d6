"""`rlhf-lessons`: every stage of the course, headless, with the same functions the notebooks call.

Progress goes to stderr; the last line on stdout is one JSON object summarising the stage.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

from .config_checks import SEED_MAX
from .errors import ConfigError, CourseError
from .runtime import MAX_THREADS, default_threads, set_threads

MAX_NEW_TOKENS = 64  # the longest request is 34 tokens: with 64 new tokens every one fits the 128-token context
MAX_BEST_OF = 1024  # best-of-n samples max(n) replies per request: 16 times the default 64 is already hours


def _emit(summary: dict) -> None:
    """The summary as one line of strict JSON: NaN and infinities become null, which every JSON parser reads."""
    print(json.dumps(_finite_or_none(summary), default=str, allow_nan=False))


def _finite_or_none(value):
    """`value` with every non-finite float (NaN, inf) inside dicts, lists and tuples replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value


# Argument types: argparse calls them on the text given, so a bad value stops the command before any work, with a
# message that names the argument (exit code 2).

def _whole_number(low: int, high: int | None = None):
    """An argparse type: a whole number from `low` to `high` (no upper bound if None)."""
    def parse(text: str) -> int:
        bounds = f">= {low}" if high is None else f"from {low} to {high}"
        try:
            value = int(text)
        except ValueError:  # also the 4300-digit limit on int()
            raise argparse.ArgumentTypeError(f"must be a whole number {bounds}, got {text[:40]!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be a whole number {bounds}, got {value}")
        return value
    return parse


def _finite_number(low: float, low_allowed: bool):
    """An argparse type: a finite number above `low` (or equal to it, if `low_allowed`); NaN and inf refused."""
    def parse(text: str) -> float:
        bounds = f">= {low}" if low_allowed else f"> {low}"
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {bounds}, got {text[:40]!r}") from None
        if not math.isfinite(value) or value < low or (value == low and not low_allowed):
            raise argparse.ArgumentTypeError(f"must be a finite number {bounds}, got {text[:40]!r}")
        return value
    return parse


def _population(text: str) -> str:
    """An argparse type: the name of a rater population of gold.py."""
    from .gold import POPULATIONS

    if text not in POPULATIONS:
        raise argparse.ArgumentTypeError(f"unknown population {text[:40]!r}; choose from {sorted(POPULATIONS)}")
    return text


def _ppo_reward(text: str) -> str:
    """An argparse type: a reward model checkpoint, or `gold` / `gold:POPULATION` with a population that exists."""
    if text.startswith("gold:"):
        _population(text.partition(":")[2])
    return text


def _reward_init(text: str) -> str:
    """An argparse type: the reward model's starting checkpoint, any but `base`, since the fresh labels compare the
    init policy's replies with the base model's and need two different models."""
    if text == "base":
        raise argparse.ArgumentTypeError("the fresh labels compare replies of --init and of the base model, so --init "
                                         "cannot be base: use sft (the default) or another checkpoint")
    return text


def _output_file(text: str) -> str:
    """An argparse type: a file to write, in a folder that exists, and not itself a folder."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name in it, such as "
                                         f"{text.rstrip('/')}/pairs.jsonl")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"the folder {str(path.parent)!r} of {text!r} does not exist; create it first")
    return text


def _output_folder(text: str) -> str:
    """An argparse type: a folder to write into (made if missing), so not an existing file."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder; give a folder to write into")
    return text


SEED = _whole_number(0, SEED_MAX)
COUNT = _whole_number(1)  # steps, epochs, updates, pairs: at least one


def _seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def cmd_world(args) -> dict:
    from . import gold, world

    rng = random.Random(args.seed)
    shown = []
    for kind in world.KIND_NAMES:
        request = rng.choice(world.requests(kind=kind))
        print(f"\n[{kind}] User: {request.prompt}")
        styles = [s for s in world.STYLES if (s == "comply") == (kind == "harmful") or s in ("refusal", "rambling")]
        for style in rng.sample(styles, min(3, len(styles))):
            text = world.reply(request, style, rng)
            print(f"  {gold.gold_score(request, text):+6.2f}  ({style}) {text}")
            shown.append({"kind": kind, "style": style, "gold": round(gold.gold_score(request, text), 3)})
    counts = {kind: len(world.requests(kind=kind)) for kind in world.KIND_NAMES}
    return {"requests": len(world.requests()),
            "by_split": {split: len(world.requests(split)) for split in world.SPLITS}, "by_kind": counts,
            "populations": sorted(gold.POPULATIONS), "examples": shown}


def cmd_data(args) -> dict:
    from .world import write_world_files
    from .workspace import WORLD_DIR

    out = args.out or WORLD_DIR
    digests = write_world_files(out)
    print(f"wrote {len(digests)} files to {out}", file=sys.stderr)
    return {"out": str(out), "files": digests}


def cmd_pretrain(args) -> dict:
    from .pretrain import PretrainConfig, pretrain
    from .workspace import BASE_MODEL_DIR

    out = Path(args.out).expanduser() if args.out else BASE_MODEL_DIR
    # Only a shipped model that is there can be lost: rebuilding a missing data/base needs no flag.
    shipped = out.resolve() == BASE_MODEL_DIR.resolve() and out.is_dir() and any(out.iterdir())
    if shipped and not args.overwrite_shipped:  # checked before minutes of data preparation and training
        raise ConfigError(f"pretrain would overwrite the shipped base model in {BASE_MODEL_DIR}: pass --out FOLDER to "
                          "train a new one elsewhere, or --overwrite-shipped to replace the shipped one")
    cfg = PretrainConfig(seed=args.seed)
    if args.steps is not None:
        cfg.steps = args.steps
    command = f"rlhf-lessons --threads {torch.get_num_threads()} pretrain" + (f" --steps {args.steps}" if args.steps else "")
    command += " --overwrite-shipped" if shipped else ""  # so the manifest's command still reproduces it
    return pretrain(cfg, out, command=command)


def _check_fits_splits(n: int | None, splits, flag: str) -> None:
    """Refuse more requests than a split holds: beyond that the requests repeat, and the run only takes longer."""
    from .world import requests

    if n is None:
        return
    sizes = {split: len(requests(split)) for split in splits}
    smallest = min(sizes, key=sizes.get)  # so the advice fits every split asked for
    if n > sizes[smallest]:
        raise ConfigError(f"{flag} {n} is more than the {sizes[smallest]} requests of the {smallest} split: use "
                          f"{flag} {sizes[smallest]} or fewer")


def cmd_evaluate(args) -> dict:
    from .evaluate import SPLITS, evaluate_splits

    splits = SPLITS if args.split == "all" else (args.split,)
    _check_fits_splits(args.n, splits, "--n")
    results = evaluate_splits(args.model, against=args.against, splits=splits, n=args.n, seed=args.seed,
                              population=args.population)
    for split, result in results.items():  # a readable table on stderr; the JSON summary stays last on stdout
        win = f"  win {result['win_rate']:.3f}" if "win_rate" in result else ""
        print(f"{split:>16}: gold {result['gold_mean']:+.3f}  helpful {result['helpful_rate']:.3f}  polite "
              f"{result['polite_rate']:.3f}  harmful {result['harmful_compliance_rate']:.3f}  over-refusal "
              f"{result['over_refusal_rate']:.3f}{win}", file=sys.stderr)
    return {"model": str(args.model), "against": args.against, "seed": args.seed, "population": args.population,
            "splits": results}


def cmd_sft(args) -> dict:
    from .sft import SFTConfig, train_sft

    cfg = SFTConfig(seed=args.seed)
    if args.epochs is not None:
        cfg.epochs = args.epochs
    examples = None
    if args.chosen:  # fine-tuning on preferences: the chosen reply of every pair, as a demonstration
        from .round_two import chosen_demonstrations
        from .store import read_label_file

        examples = chosen_demonstrations([p for path in args.chosen for p in read_label_file(path)])
    return train_sft(cfg, base=args.base, out_dir=args.out, examples=examples)


def cmd_label(args) -> dict:
    from .labeling import label
    from .ppo import build_missing

    build_missing(args.policy, reward=None)  # as reward, ppo and bestofn do: a missing SFT model is trained first
    return label(population=args.population, n=args.n, policy=args.policy, seed=args.seed, out=args.out)


def cmd_deploy(args) -> dict:
    from .deploy import DeployConfig, check_deploy_config, deploy
    from .store import PreferenceStore
    from .workspace import workspace_dir

    cfg = DeployConfig(sessions=args.sessions, users=args.users, kinds=args.kinds, feedback_rate=args.feedback_rate,
                       unhappy_factor=args.unhappy_factor, regenerate_rate=args.regenerate_rate,
                       correction_rate=args.correction_rate, compare_rate=args.compare_rate, heard=args.heard,
                       max_new_tokens=args.max_new_tokens, seed=args.seed)
    check_deploy_config(cfg)  # before loading the model
    store = PreferenceStore(args.store or workspace_dir() / "product.sqlite")
    print(f"deploying {args.model} to {cfg.sessions} user sessions", file=sys.stderr, flush=True)
    result = deploy(args.model, cfg, store=store, name=f"{args.model}, seed {args.seed}")
    summary = {"model": args.model, "store": str(store.path), "labels": len(result["labels"]),
               "new_in_store": result["stored"], "pairs_in_store": len(store.pairs()), **result["summary"]}
    if args.out:
        summary["out"], summary["pairs_exported"] = args.out, store.export_jsonl(args.out)
    return summary


def cmd_feedback(args) -> dict:
    from . import gold
    from .store import PreferenceStore, terminal_safe

    store = PreferenceStore(args.store)
    if args.action == "import":
        if not args.files:
            raise ConfigError("feedback import needs one or more JSONL files: rlhf-lessons feedback import FILE...")
        return {"action": "import", "store": str(store.path), **store.import_jsonl(args.files)}
    if args.action == "export":
        if not args.out:
            raise ConfigError("feedback export needs --out FILE.jsonl")
        return {"action": "export", "store": str(store.path), "out": args.out, "pairs": store.export_jsonl(args.out)}
    stats = store.stats()
    raters = sorted(stats["by_rater"])
    pairs_by_rater = {rater: store.pairs(rater=rater) for rater in raters}
    with_populations = {rater: {p: gold.agreement_with_population(pairs, p)["agreement"] for p in gold.POPULATIONS}
                        for rater, pairs in pairs_by_rater.items()}
    between = {f"{a} ~ {b}": store.agreement(a, b) for i, a in enumerate(raters) for b in raters[i + 1:]}
    for rater, row in with_populations.items():  # a rater's name comes from a file: no escape codes to the terminal
        print(f"{terminal_safe(rater):24s} pairs {len(pairs_by_rater[rater]):5d}  agreement with "
              + "  ".join(f"{p} {v if v is None else f'{v:.2f}'}" for p, v in row.items()), file=sys.stderr)
    return {"action": "stats", "store": str(store.path), **stats, "agreement_with_populations": with_populations,
            "agreement_between_raters": {k: v for k, v in between.items() if v["shared"]}}


def cmd_reward(args) -> dict:
    from .reward import run_reward_stage
    from .store import read_label_file

    for path in args.prefs or ():  # a bad file fails now, not after minutes of building and sampling
        read_label_file(path)
    return run_reward_stage(prefs=args.prefs, population=args.population, n=args.n, init=args.init, out=args.out,
                            seed=args.seed, start=args.start)


def cmd_ppo(args) -> dict:
    from .ppo import run_ppo_stage

    return run_ppo_stage(policy=args.policy, reward=args.reward, out=args.out, kl_coef=args.kl_coef,
                         target_kl=args.target_kl, updates=args.updates, seed=args.seed)


def cmd_pipeline(args) -> dict:
    from .pipeline import run_pipeline

    return run_pipeline(population=args.population, out=args.out, seed=args.seed)


def _n_list(text: str) -> list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8]; a clear error for anything else."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1 or max(values) > MAX_BEST_OF:
        raise ConfigError(f"--n-list must be whole numbers from 1 to {MAX_BEST_OF} separated by commas, like 1,2,4,8 "
                          f"(got {text!r:.60})")
    return values


def cmd_bestofn(args) -> dict:
    from .overoptimization import bestofn_sweep

    n_list = _n_list(args.n_list)
    _check_fits_splits(args.requests, ("heldout",), "--requests")
    return bestofn_sweep(args.policy, args.reward, n_list=n_list, n_requests=args.requests, seed=args.seed,
                         max_new_tokens=args.max_new_tokens, population=args.population)


def _variants(text: str | None) -> tuple[str, ...]:
    """--variants: names of round_two.FEEDBACK_VARIANTS separated by commas (None: all of them)."""
    from .round_two import FEEDBACK_VARIANTS

    if text is None:
        return tuple(FEEDBACK_VARIANTS)
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in FEEDBACK_VARIANTS]
    if unknown or not names:
        raise ConfigError(f"--variants must name ways of hearing the users from {', '.join(FEEDBACK_VARIANTS)}, "
                          f"separated by commas (got {text!r:.80})")
    return names


def cmd_experiment(args) -> dict:
    from .overoptimization import overopt_config, run_overopt_experiment
    from .rater_bias import run_bias_experiment, run_mixture_experiment

    if args.name == "round-two":
        from .round_two import RoundTwoConfig, run_round_two, short_summary

        if args.no_reuse:
            raise ConfigError("--no-reuse applies to the bias and mixture sweeps only: round-two always deploys and "
                              "trains afresh; drop it")
        _check_fits_splits(args.eval_n, ("heldout", "unseen-phrasing", "unseen-subject"), "--eval-n")
        variants = _variants(args.variants)
        cfg = RoundTwoConfig(eval_n=args.eval_n, seed=args.seed)
        cfg.deploy.sessions = args.sessions or cfg.deploy.sessions
        cfg.ppo.updates = args.updates or cfg.ppo.updates
        cfg.original_pairs = args.original_pairs  # one more run: the users' pairs and the original raters'
        return short_summary(run_round_two(cfg, variants=variants))
    given = [flag for flag, value in (("--sessions", args.sessions), ("--updates", args.updates),
                                      ("--original-pairs", args.original_pairs), ("--variants", args.variants))
             if value]
    if given:
        raise ConfigError(f"{' and '.join(given)} apply to round-two only; drop {'them' if len(given) > 1 else 'it'}")
    if args.name == "overopt":
        given = [flag for flag, value in (("--eval-n", args.eval_n), ("--no-reuse", args.no_reuse)) if value]
        if given:  # silently ignoring them would let a learner think the run used them
            raise ConfigError(f"{' and '.join(given)} apply to the bias and mixture sweeps only: the overopt "
                              "experiment always trains and measures on every held-out request; drop "
                              f"{'them' if len(given) > 1 else 'it'}")
        return run_overopt_experiment(seed=args.seed, cfg=overopt_config(seed=args.seed))
    run = run_bias_experiment if args.name == "bias" else run_mixture_experiment
    _check_fits_splits(args.eval_n, ("heldout",), "--eval-n")  # before the sweep's minutes of training
    return run(seed=args.seed, eval_n=args.eval_n, reuse=not args.no_reuse)


class BadArguments(ConfigError):
    """A command line argparse refused; `command` is the stage it was for (None for the top-level options)."""

    def __init__(self, command: str | None, message: str):
        super().__init__(message)
        self.command = command


class _Parser(argparse.ArgumentParser):
    """argparse, except that a bad command line raises BadArguments, so `main` reports it like every user error:
    one line on stderr, a JSON summary with "error", exit code 2. Sub-commands' parsers are of this class too."""

    def error(self, message: str):
        command = self.prog.split()[-1] if " " in self.prog else None
        raise BadArguments(command, f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    from .deploy import HEARD, DeployConfig

    DEPLOY_DEFAULTS = DeployConfig()  # noqa: N806 - the deploy stage's defaults, shown in its --help
    parser = _Parser(prog="rlhf-lessons", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=_whole_number(1, MAX_THREADS), default=None,
                        help="torch CPU threads (default: $RLHF_LESSONS_THREADS or 2; fewer can be faster on a busy "
                             "machine)")
    sub = parser.add_subparsers(dest="command", required=True)

    def stage(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--seed", type=SEED, default=0, help=f"random seed, 0 to {SEED_MAX} (default: 0)")
        p.set_defaults(func=func)
        return p

    stage("world", cmd_world, "print sampled requests of the toy world with gold-scored example replies")
    p = stage("data", cmd_data, "regenerate the shipped world files (data/world) byte for byte")
    p.add_argument("--out", type=_output_folder, default=None, help="folder to write into (default: data/world)")
    p = stage("pretrain", cmd_pretrain, "train the tokenizer and the base model from scratch (about 6 minutes)")
    p.add_argument("--out", type=_output_folder, default=None,
                   help="folder to write into (default: data/base, which needs --overwrite-shipped)")
    p.add_argument("--overwrite-shipped", action="store_true", help="allow replacing the shipped base model in "
                                                                    "data/base")
    p.add_argument("--steps", type=COUNT, default=None, help="training steps, at least 1 (default: 1500)")
    p = stage("evaluate", cmd_evaluate, "measure a model on the evaluation splits with the gold rater")
    p.add_argument("--model", default="base", help="checkpoint folder, or base / sft / ppo")
    p.add_argument("--against", default=None, help="a second model: adds the win rate of --model over it")
    p.add_argument("--split", default="all", choices=["all", "heldout", "unseen-phrasing", "unseen-subject"],
                   help="which evaluation split (default: all three, side by side)")
    p.add_argument("--n", type=COUNT, default=None,
                   help="requests per split, drawn from the whole split, at most its size (default: its fixed "
                        "evaluation set)")
    p.add_argument("--population", type=_population, default="balanced",
                   help="rater population that scores (default: balanced)")
    p = stage("sft", cmd_sft, "supervised fine-tuning on the world's demonstrations")
    p.add_argument("--base", default="base", help="checkpoint to start from (default: the shipped base model)")
    p.add_argument("--out", type=_output_folder, default=None,
                   help="folder to write into (default: the workspace's sft)")
    p.add_argument("--epochs", type=COUNT, default=None, help="passes over the demonstrations, at least 1 "
                                                                "(default: 5)")
    p.add_argument("--chosen", nargs="+", default=None, metavar="PAIRS.jsonl",
                   help="train on the chosen replies of these preference files instead of the world's "
                        "demonstrations (SFT on preferences, lesson 07)")
    p = stage("label", cmd_label, "simulated raters of a population label pairs of sampled replies")
    p.add_argument("--population", type=_population, default="balanced", help="balanced, cautious, verbose or terse")
    p.add_argument("--n", type=COUNT, default=500, help="number of pairs, at least 1")
    p.add_argument("--policy", default="sft", help="model whose replies are labelled, with base-model replies")
    p.add_argument("--out", type=_output_file, default=None, help="also write the pairs to this JSONL file")
    p = stage("deploy", cmd_deploy, "ship a model to simulated users and store the feedback they leave (thumbs, "
                                     "regenerations, corrections) for another round of reward modelling")
    p.add_argument("--model", default="ppo", help="checkpoint the users talk to (default: the workspace's ppo)")
    p.add_argument("--sessions", type=COUNT, default=DEPLOY_DEFAULTS.sessions,
                   help=f"user sessions, one request each (default: {DEPLOY_DEFAULTS.sessions})")
    p.add_argument("--users", default=DEPLOY_DEFAULTS.users,
                   help=f"the product's users, population:share (default: {DEPLOY_DEFAULTS.users})")
    p.add_argument("--kinds", default=DEPLOY_DEFAULTS.kinds,
                   help=f"the product's requests, kind:share (default: {DEPLOY_DEFAULTS.kinds})")
    for flag, what in (("feedback-rate", "chance that a satisfied user leaves a thumb"),
                       ("regenerate-rate", "chance that an unhappy user who rates asks for another reply"),
                       ("correction-rate", "chance that an unhappy user who rates edits the reply instead"),
                       ("compare-rate", "chance that a user who rates is asked to pick between two replies")):
        default = getattr(DEPLOY_DEFAULTS, flag.replace("-", "_"))
        p.add_argument(f"--{flag}", type=_finite_number(0.0, low_allowed=True), default=default,
                       help=f"{what}, 0 to 1 (default: {default})")
    p.add_argument("--unhappy-factor", type=_finite_number(1.0, low_allowed=True),
                   default=DEPLOY_DEFAULTS.unhappy_factor,
                   help="how many times likelier an unhappy user rates, >= 1 "
                        f"(default: {DEPLOY_DEFAULTS.unhappy_factor})")
    p.add_argument("--heard", choices=HEARD, default=DEPLOY_DEFAULTS.heard,
                   help=f"who can leave feedback: everyone, only unhappy users, or one population's users (default: "
                        f"{DEPLOY_DEFAULTS.heard})")
    p.add_argument("--max-new-tokens", type=_whole_number(1, MAX_NEW_TOKENS),
                   default=DEPLOY_DEFAULTS.max_new_tokens, help=f"reply length limit in tokens, 1 to {MAX_NEW_TOKENS} "
                                                                f"(default: {DEPLOY_DEFAULTS.max_new_tokens})")
    p.add_argument("--store", default=None, help="label store to add the feedback to (default: the workspace's "
                                                 "product.sqlite, apart from your own labels)")
    p.add_argument("--out", type=_output_file, default=None,
                   help="also export the store's pairs to this JSONL file (for rlhf-lessons reward --prefs FILE)")
    p = stage("feedback", cmd_feedback, "import, export and summarise the preference store")
    p.add_argument("action", choices=["import", "export", "stats"])
    p.add_argument("files", nargs="*", help="JSONL files to import")
    p.add_argument("--out", default=None, help="file to export to")
    p.add_argument("--store", default=None, help="store file (default: the workspace's preferences.sqlite)")
    p = stage("reward", cmd_reward, "train a Bradley-Terry reward model")
    p.add_argument("--prefs", nargs="*", default=None, help="JSONL preference files to train on as well")
    p.add_argument("--population", type=_population, default="balanced",
                   help="population of the fresh simulated labels")
    p.add_argument("--n", type=_whole_number(0), default=None,
                   help="number of fresh simulated pairs (0: train on --prefs and the store's labels only)")
    p.add_argument("--init", type=_reward_init, default="sft",
                   help="checkpoint whose backbone starts the reward model (not base)")
    p.add_argument("--start", default=None, help="a reward model to go on training (say rm, last round's) instead "
                                                 "of a fresh head on --init")
    p.add_argument("--out", type=_output_folder, default=None,
                   help="folder to write into (default: the workspace's rm)")
    p = stage("ppo", cmd_ppo, "fine-tune the policy with PPO against the reward model")
    p.add_argument("--policy", default="sft")
    p.add_argument("--reward", type=_ppo_reward, default="rm",
                   help="reward model checkpoint (default: the workspace's rm), or gold / gold:POPULATION")
    p.add_argument("--out", type=_output_folder, default=None,
                   help="folder to write into (default: the workspace's ppo)")
    leash = p.add_mutually_exclusive_group()
    leash.add_argument("--kl-coef", type=_finite_number(0.0, low_allowed=True), default=None,
                       help="a fixed KL coefficient beta, >= 0")
    leash.add_argument("--target-kl", type=_finite_number(0.0, low_allowed=False), default=None,
                       help="adaptive beta aiming at this KL (nats), > 0")
    p.add_argument("--updates", type=COUNT, default=None, help="PPO updates, at least 1")
    p = stage("bestofn", cmd_bestofn, "best-of-n on held-out requests: proxy reward, gold reward and KL for each n")
    p.add_argument("--policy", default="sft", help="the model that samples (default: the workspace's sft)")
    p.add_argument("--reward", default="rm", help="the reward model that picks (default: the workspace's rm)")
    p.add_argument("--n-list", default="1,2,4,8,16,32,64", help="values of n, comma-separated (default: 1,2,...,64)")
    p.add_argument("--requests", type=COUNT, default=None,
                   help="number of held-out requests, at most the split's size (default: its evaluation set)")
    p.add_argument("--max-new-tokens", type=_whole_number(1, MAX_NEW_TOKENS), default=40,
                   help=f"reply length limit in tokens, 1 to {MAX_NEW_TOKENS} (default: 40)")
    p.add_argument("--population", type=_population, default="balanced",
                   help="the gold rater that measures (default: balanced)")
    p = stage("experiment", cmd_experiment,
              "lesson 06's full sweeps, written to <workspace>/experiments/NAME.json: overopt (best-of-n and PPO "
              "without a KL leash), bias (balanced, cautious and verbose raters), mixture (balanced and cautious "
              "raters in shares 0 to 1); and lesson 07's round-two (deploy the workspace's ppo, train a second round "
              "on its users' feedback for four ways of hearing them, and fine-tune on the chosen replies)")
    p.add_argument("name", choices=["overopt", "bias", "mixture", "round-two"])
    p.add_argument("--eval-n", type=COUNT, default=None, help="bias, mixture, round-two: requests per evaluation "
                                                            "split to measure on (default: the evaluation sets)")
    p.add_argument("--no-reuse", action="store_true", help="bias, mixture: train again even when a run with the "
                                                           "same settings is saved")
    p.add_argument("--sessions", type=COUNT, default=None, help="round-two: user sessions deployed (default 20000)")
    p.add_argument("--updates", type=COUNT, default=None, help="round-two: PPO updates a round (default 60)")
    p.add_argument("--original-pairs", type=_whole_number(0), default=0,
                   help="round-two: one more run, the first variant's pairs with this many fresh pairs of the "
                        "original balanced raters mixed in (default 0: no such run)")
    p.add_argument("--variants", default=None, help="round-two: ways of hearing the users, separated by commas "
                                                    "(default: as deployed,representative,unhappy only,cautious only)")
    p = stage("pipeline", cmd_pipeline, "base -> SFT -> simulated labels -> reward model -> PPO -> evaluation, "
                                       "with a report")
    p.add_argument("--population", type=_population, default="balanced",
                   help="the simulated raters whose labels train the reward model")
    p.add_argument("--out", type=_output_folder, default=None,
                   help="folder for checkpoints and report (default: the workspace)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one stage; exit code 0, 2 for a user's mistake (one line on stderr), or a traceback for a bug."""
    from .store import LabelFileError

    try:
        args = build_parser().parse_args(argv)
    except BadArguments as err:
        return _report(err.command, err)
    t0 = time.time()
    try:
        set_threads(default_threads() if args.threads is None else args.threads)  # $RLHF_LESSONS_THREADS checked
        _seed(args.seed)
        summary = args.func(args)
    except (CourseError, LabelFileError) as err:  # only the course's own errors: anything else is a bug
        return _report(args.command, err)
    summary = {"command": args.command, **summary}
    summary.setdefault("seconds", round(time.time() - t0, 1))
    _emit(summary)
    return 0


def _report(command: str | None, err: Exception) -> int:
    """A user's mistake: one line on stderr, the JSON summary with "error" on stdout, and exit code 2."""
    from .store import terminal_safe  # one line: newlines, ANSI escapes and bidi overrides shown as escapes

    print(f"rlhf-lessons{'' if command is None else ' ' + command}: error: {terminal_safe(err)}", file=sys.stderr)
    _emit({"command": command, "error": str(err)})
    return 2


if __name__ == "__main__":
    sys.exit(main())

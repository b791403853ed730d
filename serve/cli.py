"""`vseam serve MODEL --head-profile FILE [--head-profile FILE ...] [--fold] [--default-profile NAME] [vLLM args...]`

Validates every profile against the model's fingerprint (config.json only; exits 1 naming the file and field
before any weights load), then replaces itself with vLLM's own OpenAI-compatible server
(`python -m vllm.entrypoints.openai.api_server`), passing every other flag through unchanged and adding
`--middleware vseam.serve.middleware.HeadProfileMiddleware`. The profile config reaches all vLLM processes through the
environment variable `VSEAM_HEAD_PROFILES` (`vseam.serve.protocol`), with each profile's content and hash, where
the plugin (`vseam.patches.plugin`) picks it up.
"""

from __future__ import annotations

import argparse
import os
import secrets
import pathlib
import shlex
import sys

from vseam.serve.protocol import AUTO, ENV_VAR, NONE, ProfileEntry, ServeConfig

MIDDLEWARE = "vseam.serve.middleware.HeadProfileMiddleware"
#: Linux refuses a single environment string over 128 KiB; the profile config stays well below
MAX_ENV_BYTES = 100 * 1024
VLLM_SERVER = ["-m", "vllm.entrypoints.openai.api_server"]

DESCRIPTION = (
    "Start vLLM's OpenAI-compatible server with V-SEAM head profiles. Without --fold, each request picks a loaded "
    "profile by extra_body={'vllm_xargs': {'head_profile': NAME}} or by the model name 'MODEL:NAME' ('none' = "
    "unmodified, 'auto' = route by the question's semantic level). All flags not listed here go to vLLM."
)


def _add_arguments(p: argparse.ArgumentParser, with_model: bool) -> None:
    if with_model:
        p.add_argument("model", help="checkpoint directory or hub id (as for `vllm serve`)")
    p.add_argument("--head-profile", action="append", default=[], metavar="FILE", required=True,
                   help="a head-profile JSON file (repeat to load several)")
    p.add_argument("--fold", action="store_true",
                   help="static mode: fold the (single) profile into o_proj weights at load; requests cannot choose")
    p.add_argument("--default-profile", metavar="NAME", default=None,
                   help="profile of requests that name none (per-request mode; default: none)")
    p.add_argument("--max-head-profiles", type=int, default=0, metavar="N",
                   help="reserve room for N profiles at once, so the admin routes can load and retire profiles "
                        "without a restart (like vLLM's --max-loras)")
    p.add_argument("--admin-key", default=None, metavar="KEY",
                   help="key of the admin routes (POST/DELETE /v1/head_profiles); default: the server's --api-key")
    p.add_argument("--enable-profile-admin", action="store_true",
                   help="allow the admin routes even when no key is configured (trusted networks only)")
    p.add_argument("--dry-run", action="store_true", help="validate and print the vLLM command instead of running it")


def register(sub) -> None:
    """`vseam serve` in `vseam --help` (the umbrella CLI hands `vseam serve ...` argv straight to `main`)."""
    p = sub.add_parser("serve", help="serve a model with head profiles through vLLM's OpenAI API",
                       description=DESCRIPTION)
    _add_arguments(p, with_model=True)
    p.set_defaults(func=lambda args: main(sys.argv[2:]))


def _split_argv(argv: list[str]) -> tuple[str | None, list[str]]:
    """MODEL is the first argument (like `vllm serve MODEL`) or given by --model; the rest is left as it is."""
    if argv and not argv[0].startswith("-"):
        return argv[0], argv[1:]
    rest, model = [], None
    it = iter(range(len(argv)))
    for i in it:
        a = argv[i]
        if a == "--model" and i + 1 < len(argv):
            model = argv[i + 1]
            next(it, None)
        elif a.startswith("--model="):
            model = a.split("=", 1)[1]
        else:
            rest.append(a)
    return model, rest


def _flag_values(argv: list[str], flag: str) -> list[str]:
    """Values of a vLLM flag that takes one or more values (`--flag a b`, `--flag=a`)."""
    out = []
    for i, a in enumerate(argv):
        if a == flag:
            for v in argv[i + 1 :]:
                if v.startswith("-"):
                    break
                out.append(v)
        elif a.startswith(flag + "="):
            out.append(a.split("=", 1)[1])
    return out


def _fingerprint(model: str):
    from vseam.core.errors import UserError
    from vseam.core.families import fingerprint_of

    try:
        return fingerprint_of(model)
    except FileNotFoundError:
        if not pathlib.Path(model).exists():  # a hub id not in the cache yet: fetch just its config.json
            try:
                from huggingface_hub import hf_hub_download

                hf_hub_download(model, "config.json")
                return fingerprint_of(model)
            except Exception as e:  # offline, no such repo, ...
                raise UserError(f"{model}: cannot read the model's config.json to validate profiles ({e})") from None
        raise UserError(f"{model}: no config.json in this directory") from None
    except ValueError as e:
        raise UserError(f"{model}: {e}") from None


def build_config(model: str, profile_files: list[str], fold: bool, default: str | None,
                 vllm_args: list[str], max_profiles: int = 0, admin_key: str | None = None,
                 enable_admin: bool = False) -> ServeConfig:
    """Validate everything `vseam serve` can check before vLLM starts; raise UserError/ProfileError naming the file."""
    from vseam.head_profiles import load_profile
    from vseam.patches.plugin import UnsupportedVllmVersion, check_vllm_version
    from vseam.core.errors import UserError

    try:
        check_vllm_version()
    except UnsupportedVllmVersion as e:
        raise UserError(str(e)) from None
    if not profile_files:
        raise UserError("--head-profile: give at least one profile file")
    fingerprint = _fingerprint(model)
    refs: list[ProfileEntry] = []
    seen: dict[str, str] = {}
    for path in profile_files:
        profile = load_profile(path)
        profile.check_fits(fingerprint, source=path)
        if profile.name in seen:
            raise UserError(f"{path}: field 'name': profile name '{profile.name}' is also used by {seen[profile.name]}")
        seen[profile.name] = path
        refs.append(ProfileEntry.of(profile))
    names = [r.name for r in refs]
    if fold:
        if len(refs) != 1:
            raise UserError(f"--fold folds exactly one profile into the weights, got {len(refs)}: {', '.join(names)}")
        if default not in (None, names[0]):
            raise UserError(f"--default-profile {default}: with --fold every request uses '{names[0]}'")
        default = names[0]
    else:
        default = default or NONE
        if default == AUTO or (default != NONE and default not in names):
            raise UserError(f"--default-profile {default}: not a loaded profile; choose one of: none, {', '.join(names)}")
    if max_profiles < 0:
        raise UserError(f"--max-head-profiles {max_profiles}: give 0 or more")
    if max_profiles and fold:
        raise UserError("--max-head-profiles: with --fold the profile is part of the weights; profiles cannot be "
                        "loaded at run time")
    if max_profiles and max_profiles < len(refs):
        raise UserError(f"--max-head-profiles {max_profiles}: {len(refs)} profiles are loaded at startup already")
    if (admin_key or enable_admin) and not max_profiles:
        raise UserError("--admin-key / --enable-profile-admin: give --max-head-profiles N to reserve room for "
                        "profiles loaded at run time")
    api_keys = _flag_values(vllm_args, "--api-key")
    has_key = bool(admin_key or api_keys or os.environ.get("VLLM_API_KEY"))
    config = ServeConfig(
        mode="static" if fold else "per-request",
        profiles=refs,
        default=default,
        served_model_names=_flag_values(vllm_args, "--served-model-name") or [model],
        api_keys=api_keys,
        nonce=secrets.token_hex(8),
        capacity=max_profiles,
        admin=bool(max_profiles) and (has_key or enable_admin),
        admin_keys=[admin_key] if admin_key else [],
        fingerprint=fingerprint.model_dump(),
    )
    size = len(config.to_env().encode())
    if size > MAX_ENV_BYTES:
        raise UserError(f"--head-profile: the {len(refs)} profiles take {size // 1024} KiB in the environment that "
                        f"vLLM hands its processes (limit {MAX_ENV_BYTES // 1024} KiB); serve fewer profiles")
    return config


def vllm_command(model: str, vllm_args: list[str]) -> list[str]:
    return [sys.executable, *VLLM_SERVER, "--model", model, *vllm_args, "--middleware", MIDDLEWARE]


def main(argv: list[str] | None = None) -> int:
    from vseam.core.errors import USER_ERRORS, UserError

    argv = sys.argv[1:] if argv is None else list(argv)
    model, rest = _split_argv(argv)
    parser = argparse.ArgumentParser(prog="vseam serve", description=DESCRIPTION,
                                     usage="vseam serve MODEL --head-profile FILE [...] [--fold] "
                                           "[--default-profile NAME] [vLLM args ...]")
    _add_arguments(parser, with_model=False)
    args, vllm_args = parser.parse_known_args(rest)
    try:
        if not model:
            raise UserError("give the model first: vseam serve MODEL --head-profile FILE [...]")
        config = build_config(model, args.head_profile, args.fold, args.default_profile, vllm_args,
                              args.max_head_profiles, args.admin_key, args.enable_profile_admin)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    cmd = vllm_command(model, vllm_args)
    env = {**os.environ, ENV_VAR: config.to_env()}
    summary = (f"vseam serve: {config.mode} mode, profiles {', '.join(config.names)}, default '{config.default}'")
    if config.capacity:
        summary += (f", room for {config.capacity} profiles (admin routes "
                    f"{'on' if config.admin else 'off: no key; add --admin-key or --enable-profile-admin'})")
    if args.dry_run:
        print(summary)
        print(f"{ENV_VAR}={shlex.quote(config.to_env())} {shlex.join(cmd)}")
        return 0
    print(summary + "; starting vLLM", file=sys.stderr, flush=True)
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())

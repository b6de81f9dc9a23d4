"""Profile schema and loader.

A profile has two parts: ``setup`` (what the suite installs on kind or
local) and ``policy`` (what conformance requires of any setup). The loader
is strict on purpose: an unknown key, a bad duration or an impossible
combination is a one-line ProfileError naming the file and the key, because
a typo that is silently ignored would certify the wrong thing.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from cluster.errors import ProfileError, SettingsError

PROFILES_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = PROFILES_DIR / "default.yaml"

MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]


@dataclass(frozen=True)
class VaultSetup:
    role_scope: Literal["namespace", "cluster"] = "namespace"
    bound_service_accounts: Literal["named", "wildcard"] = "named"
    token_ttl: timedelta = timedelta(seconds=20)
    token_max_ttl: timedelta = timedelta(seconds=60)
    audit: bool = True
    # The audience that workload tokens carry and roles require.
    audience: str = "vault"
    # Raft nodes behind the one address workloads use: 1, or 3 or 5 for HA (an odd count keeps a quorum
    # through one node's absence). The local platform runs more than one only for upgrades (suites/upgrade).
    nodes: int = 1


@dataclass(frozen=True)
class MtlsSetup:
    default: MtlsMode = "STRICT"
    namespaces: dict[str, MtlsMode] = field(default_factory=dict)


@dataclass(frozen=True)
class MeshSetup:
    ca: Literal["istio-csr", "plugin"] = "istio-csr"
    cert_ttl: timedelta = timedelta(seconds=30)
    renew_fraction: float = 0.5
    pki_allowed_uri_sans: str = "spiffe://{trust_domain}/ns/{namespace}/sa/*"
    # The mesh CA's own Vault token: it must outlive the renewal window.
    ca_token_ttl: timedelta = timedelta(seconds=60)
    ca_token_max_ttl: timedelta = timedelta(seconds=300)
    mtls: MtlsSetup = field(default_factory=MtlsSetup)
    authz: Literal["namespace", "none"] = "namespace"

    @property
    def renewal_window(self) -> timedelta:
        """How long a certificate lives after its renewal is due."""
        return self.cert_ttl * (1 - self.renew_fraction)


@dataclass(frozen=True)
class Setup:
    trust_domain: str = "cluster.local"
    vault: VaultSetup = field(default_factory=VaultSetup)
    mesh: MeshSetup = field(default_factory=MeshSetup)


@dataclass(frozen=True)
class Policy:
    max_vault_token_ttl: timedelta = timedelta(hours=1)
    # The longest an identity may keep Vault access after its role, policies or service account
    # are taken away: its tokens' effective max TTL, plus the API server's 10 s token cache.
    max_revocation_latency: timedelta = timedelta(minutes=10)
    max_cert_ttl: timedelta = timedelta(hours=24)
    require_strict_mtls: bool = True
    require_namespace_scoped_roles: bool = True
    require_named_service_accounts: bool = True
    require_audit_device: bool = True
    require_authz: bool = True
    exempt_namespaces: tuple[str, ...] = ("kube-system", "istio-system", "cert-manager", "vault")
    # Chaos: a success later than the expected fail-closed moment plus this is a violation.
    fail_closed_tolerance: timedelta = timedelta(seconds=2)
    # Chaos: access must be back (3 successes in a row) this soon after the restore.
    recovery_bound: timedelta = timedelta(seconds=30)
    # Audit evidence: a refusal Vault audited is in Prometheus this soon (the exporter's poll plus a scrape;
    # the goal is 2 s at a 1 s scrape interval, this leaves a loaded machine room) ...
    audit_visible_within: timedelta = timedelta(seconds=10)
    # ... and the alert that names it fires this soon after that (rules evaluated every second, no "for").
    alert_within: timedelta = timedelta(seconds=10)


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    setup: Setup
    policy: Policy


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def parse_duration(text: str) -> timedelta:
    """Parse Go-style durations as Vault and Istio write them: 20s, 1h, 1h30m, 500ms."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise ValueError(f"bad duration {text!r}: write it like 20s, 5m, 1h30m or 500ms")
    hours, minutes, seconds, millis = (float(g) if g else 0.0 for g in match.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds, milliseconds=millis)


T = TypeVar("T")


def _convert(value: Any, hint: Any, key: str, path: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise ProfileError(path, key, f"expected a mapping, got {type(value).__name__}")
        return _build(hint, value, key, path)
    if hint is timedelta:
        try:
            return parse_duration(value)
        except ValueError as err:
            raise ProfileError(path, key, str(err)) from None
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ProfileError(path, key, f"{value!r} is not one of {', '.join(map(str, allowed))}")
        return value
    if origin in (dict, tuple):
        return _container(value, hint, key, path)
    return _scalar(value, hint, key, path)


def _container(value: Any, hint: Any, key: str, path: str) -> Any:
    if get_origin(hint) is dict:
        if not isinstance(value, dict):
            raise ProfileError(path, key, "expected a mapping")
        _, value_hint = get_args(hint)
        return {str(k): _convert(v, value_hint, f"{key}.{k}", path) for k, v in value.items()}
    if not isinstance(value, list):
        raise ProfileError(path, key, "expected a list")
    item_hint = get_args(hint)[0]
    return tuple(_convert(v, item_hint, f"{key}[{i}]", path) for i, v in enumerate(value))


# type -> (accepts, what to call it in an error)
_SCALARS: dict[Any, tuple[Callable[[Any], bool], str]] = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    float: (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    str: (lambda v: isinstance(v, str), "a string"),
}


def _scalar(value: Any, hint: Any, key: str, path: str) -> Any:
    accepts, what = _SCALARS[hint]
    if not accepts(value):
        raise ProfileError(path, key, f"expected {what}, got {value!r}")
    return float(value) if hint is float else value


def _build(cls: type[T], data: dict[str, Any], prefix: str, path: str) -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ProfileError(path, key, f"unknown key (known: {', '.join(sorted(names))})")
    kwargs = {
        name: _convert(value, hints[name], f"{prefix}.{name}" if prefix else name, path)
        for name, value in data.items()
    }
    return cls(**kwargs)


def _check(profile: Profile) -> None:
    """Reject impossible combinations; merely unsafe ones stay installable so they can be judged."""
    path = str(profile.path)
    vault, mesh = profile.setup.vault, profile.setup.mesh
    if vault.token_ttl > vault.token_max_ttl:
        raise ProfileError(path, "setup.vault.token_ttl", "is longer than setup.vault.token_max_ttl")
    if mesh.ca_token_ttl > mesh.ca_token_max_ttl:
        raise ProfileError(path, "setup.mesh.ca_token_ttl", "is longer than setup.mesh.ca_token_max_ttl")
    if vault.nodes not in (1, 3, 5):
        raise ProfileError(path, "setup.vault.nodes", "must be 1, 3 or 5 (raft needs an odd count for a quorum)")
    if not 0 < mesh.renew_fraction < 1:
        raise ProfileError(path, "setup.mesh.renew_fraction", "must be between 0 and 1 (exclusive)")
    for key, value in (("setup.mesh.cert_ttl", mesh.cert_ttl), ("setup.vault.token_ttl", vault.token_ttl)):
        if value <= timedelta(0):
            raise ProfileError(path, key, "must be positive")
    if "{namespace}" not in mesh.pki_allowed_uri_sans and not mesh.pki_allowed_uri_sans.endswith("*"):
        raise ProfileError(path, "setup.mesh.pki_allowed_uri_sans", "must contain {namespace} or be a wildcard")
    if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", profile.setup.trust_domain):
        raise ProfileError(path, "setup.trust_domain", "must be a DNS-like name such as cluster.local")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as err:
        raise ProfileError(str(path), "", f"cannot be read ({err.strerror or err})",
                           fix=f"pass --profile with a readable YAML file, such as {DEFAULT_PROFILE}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "YAML"
        raise ProfileError(str(path), "", f"is not valid YAML at {where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProfileError(str(path), "", "must be a mapping with setup and policy")
    return data


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_profile(path: Path) -> Profile:
    """Load and validate a profile. A file with ``extends: <file>`` overrides that file."""
    data = _read_yaml(path)
    base_name = data.pop("extends", None)
    if base_name is not None:
        if not isinstance(base_name, str):
            raise ProfileError(str(path), "extends", "must be a file name")
        base_path = (path.parent / base_name).resolve()
        if base_path == path.resolve():
            raise ProfileError(str(path), "extends", "cannot extend itself")
        data = _merge(_read_yaml(base_path), data)
    data.pop("mutant", None)  # a mutant's declaration of the tests it must fail; read by tests/
    unknown = sorted(set(data) - {"setup", "policy"})
    if unknown:
        raise ProfileError(str(path), unknown[0], "unknown key (known: setup, policy)")
    setup = _build(Setup, data.get("setup") or {}, "setup", str(path))
    policy = _build(Policy, data.get("policy") or {}, "policy", str(path))
    profile = Profile(name=path.stem, path=path, setup=setup, policy=policy)
    _check(profile)
    return profile


def spiffe_pattern(setup: Setup, namespace: str) -> str:
    """The URI SAN glob a namespace's PKI role may issue."""
    return setup.mesh.pki_allowed_uri_sans.format(trust_domain=setup.trust_domain, namespace=namespace)


__all__ = [
    "DEFAULT_PROFILE",
    "MeshSetup",
    "MtlsSetup",
    "Policy",
    "Profile",
    "Setup",
    "VaultSetup",
    "load_profile",
    "parse_duration",
    "spiffe_pattern",
]


# What an upgrade's TO profile may change on a live platform (cluster.platform.Upgrades.apply_setup): the
# mesh CA's Vault role, as a chart upgrade's new values would rewrite it.
UPGRADABLE_SETUP = ("mesh.ca_token_ttl", "mesh.ca_token_max_ttl")


def setup_changes(before: Setup, after: Setup) -> tuple[str, ...]:
    """The dotted keys whose values differ between two setups ("mesh.ca_token_ttl", ...), in field order:
    what an upgrade to ``after``'s profile would change on a platform installed with ``before``'s."""
    def walk(a: Any, b: Any, prefix: str) -> list[str]:
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
            return [key for f in dataclasses.fields(a)
                    for key in walk(getattr(a, f.name), getattr(b, f.name), f"{prefix}{f.name}.")]
        return [] if a == b else [prefix.rstrip(".")]
    return tuple(walk(before, after, ""))


def upgradable_changes(before: Setup, after: Setup) -> tuple[str, ...]:
    """setup_changes(before, after), when a live platform takes them all (UPGRADABLE_SETUP). Raises
    SettingsError, naming the keys, for any other change."""
    changed = setup_changes(before, after)
    if untaken := [key for key in changed if key not in UPGRADABLE_SETUP]:
        raise SettingsError(f"the upgrade's profile changes setup.{', setup.'.join(untaken)}, which a live "
                            "platform does not take",
                            fix=f"change only setup.{', setup.'.join(UPGRADABLE_SETUP)} in the TO profile")
    return changed

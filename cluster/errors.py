"""Small, documented exceptions that carry structured context.

Each one renders as a single line that says what went wrong and names the fix,
because the person reading it is a platform engineer at a terminal, not a
debugger. Nothing here may ever carry a secret value.
"""

from __future__ import annotations


class TrustgridError(Exception):
    """Base class: ``str(err)`` is the one line a user sees."""

    def __init__(self, message: str, *, fix: str = "") -> None:
        self.message = message
        self.fix = fix
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message}; {self.fix}" if self.fix else self.message


class SettingsError(TrustgridError):
    """An option or environment variable has a value we cannot use."""


class ProfileError(TrustgridError):
    """A profile file is unreadable or invalid; names the file and the key."""

    def __init__(self, path: str, key: str, problem: str, fix: str = "") -> None:
        self.path = path
        self.key = key
        where = f"{path}: {key}" if key else path
        super().__init__(f"profile {where}: {problem}", fix=fix)


class PlatformUnavailable(TrustgridError):
    """The chosen platform cannot run here (missing tool, not root, port taken)."""




class BinaryMissing(PlatformUnavailable):
    """A control-plane or Vault binary is neither cached nor buildable."""


class PortInUse(PlatformUnavailable):
    """A port the platform must bind is already taken."""

    def __init__(self, port: int, owner: str, option: str) -> None:
        self.port = port
        super().__init__(
            f"port {port} on 127.0.0.1 is already in use by {owner}",
            fix=f"stop it or pass {option} 0 to pick a free port",
        )


class ProcessFailed(PlatformUnavailable):
    """A managed process exited or never became ready; carries its log tail."""

    def __init__(self, name: str, problem: str, log_tail: str = "") -> None:
        self.name = name
        self.log_tail = log_tail
        super().__init__(f"{name} {problem}", fix=f"see its log{': ' + log_tail if log_tail else ''}")


class FaultRefused(TrustgridError):
    """A cluster-wide fault that this platform may not run here (an existing cluster without --allow-disruptive)."""


class VaultSealed(TrustgridError):
    """Vault answered that it is sealed."""


class VaultSetupError(TrustgridError):
    """Vault refused a configuration step."""


class WaitTimeout(TrustgridError):
    """A deadline passed; says how many attempts, how long, and what was last seen."""

    def __init__(self, describe: str, attempts: int, elapsed: float, last_state: object, last_error: str) -> None:
        self.describe = describe
        self.attempts = attempts
        self.elapsed = elapsed
        self.last_state = last_state
        self.last_error = last_error
        detail = f"last state {last_state!r}"
        if last_error:
            detail += f", last error {last_error}"
        super().__init__(f"timed out after {elapsed:.1f}s and {attempts} attempts waiting for {describe}: {detail}")

"""``ananke check-config DIR``: load the config fragments and report what is wrong.

Each fragment is loaded on its own (so every problem names its file), and each of its
settings is checked against the trait of the real class it configures: the classes the
hub loads (JupyterHub and everything it finds through its entry points), Ananke's own
(LMSRegistration, the spawners, the authenticator, Kore) and ltiauthenticator's launch
validator. Nothing is started: each setting is loaded by traitlets itself into an
instance of the real class (its traits, ``@validate`` and ``@observe`` methods), as the
hub would load it; only the class's own ``__init__`` work beyond traitlets' (a spawner's
systemd probe, Kore's required arguments) is left out. No private traitlets API.

Then the LMS registration is checked (placeholders, empty settings a launch needs) and,
unless told to stay offline, the LMS's public keyset is fetched once.
"""

import copy
import difflib
import importlib
import json
import re
import stat
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.traitlets import EntryPointType
from traitlets import Dict, List, Set, TraitError, Tuple, Union
from traitlets.config import Config, Configurable, LazyConfigValue
from traitlets.utils.importstring import import_item

from .fragments import FragmentError, fragment_files, load_fragment

ERROR = "ERROR"
WARNING = "WARNING"

#: The file admins are told to edit for the LMS registration.
LMS_FRAGMENT = "30_lms.py"
#: Marks a value the admin still has to fill in (the shipped 30_lms.py uses it).
PLACEHOLDER = "REPLACE-WITH"
#: Seconds to wait for the LMS's keyset: a CLI run, not a launch; long enough for a slow LMS.
JWKS_TIMEOUT = 10.0
#: A keyset larger than this is not a keyset.
JWKS_MAX_BYTES = 1 << 20

#: Classes Ananke configures besides those JupyterHub finds through its entry points, as
#: "module:Class". Import failures are reported, never fatal: parts of Ananke may be
#: missing from an installation (or not written yet).
ANANKE_CLASSES = (
    "jupyterhub.app:JupyterHub",
    "jupyterhub.crypto:CryptKeeper",
    "jupyterhub.proxy:ConfigurableHTTPProxy",
    "ltiauthenticator.lti13.auth:LTI13Authenticator",
    "ltiauthenticator.lti13.validator:LTI13LaunchValidator",
    "ananke_hub.registration:LMSRegistration",
    "ananke_hub.registrations:DynamicRegistration",
    "ananke_hub.spawner:AnankeSystemdSpawner",
    "ananke_hub.spawner:AnankeLocalSpawner",
    "ananke_hub.auth:AnankeLTI13Authenticator",
    "ananke_hub.courses.registry:CourseRegistry",
    "ananke_hub.courses.layout:CourseLayout",
    "kore.app:Kore",
    "kore.lti.settings:LTIAdvantage",
    "kore.manage.service:CourseManager",
)

# The settings an LTI launch cannot do without (IMS Security Framework 5.1.3: the tool
# checks iss, aud and the signature against the registration), and what to copy from
# Moodle's "Tool configuration details" for each.
_LAUNCH_SETTINGS = {
    "issuer": '"Platform ID"',
    "client_id": '"Client ID"',
    "authorize_url": '"Authentication request URL"',
    "jwks_url": '"Public keyset URL"',
}

# RFC 2606 reserves these names: a registration pointing there is still the example.
_EXAMPLE_HOST = re.compile(r"(^|\.)(example\.(com|net|org|edu)|example|invalid|test)$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration, and what to do about it."""

    level: str
    file: Path | None
    setting: str | None
    message: str
    hint: str = ""
    line: int | None = None

    @property
    def is_error(self) -> bool:
        return self.level == ERROR

    @property
    def where(self) -> str:
        if self.file is None:
            return "-"
        # Fragments are named by file name; a missing directory by its full path.
        name = self.file.name if self.file.suffix in (".py", ".json") else str(self.file)
        return f"{name}:{self.line}" if self.line else name

    def format(self) -> str:
        parts = [f"{self.level:<7} {self.where}:"]
        if self.setting:
            parts.append(f"{self.setting}:")
        parts.append(self.message)
        if self.hint:
            parts.append(f"-> {self.hint}")
        return " ".join(parts)


# -- the classes a setting can configure ------------------------------------------------------


@dataclass
class KnownClasses:
    """Configurable classes by name, and those Ananke expected but could not import."""

    by_name: dict[str, list[type]]
    unavailable: dict[str, str]

    @classmethod
    def empty(cls) -> "KnownClasses":
        return cls(by_name={}, unavailable={})

    def add(self, klass: type) -> None:
        # A section names a class or any of its parents (c.Spawner.* reaches every spawner).
        for parent in klass.__mro__:
            if isinstance(parent, type) and issubclass(parent, Configurable):
                bucket = self.by_name.setdefault(parent.__name__, [])
                if parent not in bucket:
                    bucket.append(parent)

    def all_classes(self) -> list[type]:
        return [k for bucket in self.by_name.values() for k in bucket]

    def find_trait(self, section: str, key: str):
        """The (class, trait) that ``c.<section>.<key>`` sets, or (None, None).

        traitlets applies a section to instances of subclasses too, with the subclass's
        traits: ``c.Spawner.readonly_paths`` configures SystemdSpawner. So a key missing
        from the section's class is looked up in the known subclasses.
        """
        owners = self.by_name.get(section, [])
        for klass in owners:
            trait = klass.class_traits(config=True).get(key)
            if trait is not None:
                return klass, trait
        for klass in self.all_classes():
            if any(issubclass(klass, owner) for owner in owners):
                trait = klass.class_traits(config=True).get(key)
                if trait is not None:
                    return klass, trait
        return None, None

    def trait_names(self, section: str) -> set[str]:
        owners = self.by_name.get(section, [])
        names: set[str] = set()
        for klass in self.all_classes():
            if any(issubclass(klass, owner) for owner in owners):
                names.update(klass.class_traits(config=True))
        return names

    def classes_with_trait(self, key: str) -> list[str]:
        return sorted(
            name
            for name, bucket in self.by_name.items()
            if any(key in k.class_traits(config=True) for k in bucket)
        )


def _import_class(spec: str) -> type:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _entry_point_traits() -> dict[str, EntryPointType]:
    from jupyterhub.app import JupyterHub

    return {
        name: trait
        for name, trait in JupyterHub.class_traits(config=True).items()
        if isinstance(trait, EntryPointType)
    }


def load_known_classes(merged: Config) -> KnownClasses:
    """Every class a fragment may configure, resolved like JupyterHub resolves them."""
    known = KnownClasses.empty()
    for spec in ANANKE_CLASSES:
        try:
            known.add(_import_class(spec))
        except Exception as exc:  # an optional part that is missing or broken
            known.unavailable[spec.partition(":")[2]] = (
                f"could not import {spec} ({type(exc).__name__}: {exc})"
            )
    hub_section = merged.get("JupyterHub", Config())
    for name, trait in _entry_point_traits().items():
        # What JupyterHub lists in its config help: every installed plugin of the group.
        for entry_point in trait.load_entry_points().values():
            try:
                klass = entry_point.load()
            except Exception:  # noqa: S112  a broken plugin is reported only if it is used
                continue
            if isinstance(klass, type) and issubclass(klass, Configurable):
                known.add(klass)
        # The configured class itself, when it is named by module path.
        value = hub_section.get(name)
        klass = _resolve_class(trait, value)[0] if isinstance(value, str) else value
        if isinstance(klass, type) and issubclass(klass, Configurable):
            known.add(klass)
    return known


def _resolve_class(trait: EntryPointType, value: str) -> tuple[type | None, str | None]:
    """Resolve ``value`` as JupyterHub does (entry point name, then import path)."""
    entry_point = trait.load_entry_points().get(value.lower())
    target = f"{entry_point.value} (entry point {value!r})" if entry_point else repr(value)
    try:
        klass = entry_point.load() if entry_point else import_item(value)
    except Exception as exc:
        return None, f"cannot import {target}: {type(exc).__name__}: {exc}"
    return klass, None


# -- checking one value against its trait -------------------------------------------------------


def _configured(klass: type, config: Config):
    """An instance of ``klass`` configured by traitlets' ``Configurable.__init__``: loading
    the config sets, validates and cross-validates every setting as for the real object,
    without the class's own start-up work (which may need a user, systemd or a hub)."""
    instance = klass.__new__(klass)
    Configurable.__init__(instance, config=config)
    return instance


def _empty_like(trait):
    """The empty container a LazyConfigValue (``.add()``, ``.append()``) applies to."""
    kinds = trait.trait_types if isinstance(trait, Union) else [trait]
    for kind in kinds:
        if isinstance(kind, Set):
            return set()
        if isinstance(kind, List | Tuple):
            return []
        if isinstance(kind, Dict):
            return {}
    return None


_USE = {
    set: "use .add(item) or .update({...})",
    list: "use .append(item) or .extend([...])",
    dict: "use .update({...})",
}


def _lazy_mismatch(lazy: LazyConfigValue, initial) -> str | None:
    """traitlets silently drops changes that do not fit the container: say so."""
    kind = type(initial)
    ops = lazy.to_dict()
    list_ops = bool(ops.get("extend") or ops.get("prepend") or ops.get("inserts"))
    update = ops.get("update")
    if (
        (kind is not list and list_ops)
        or (kind is list and update)
        or (kind is set and isinstance(update, dict))
        or (kind is dict and isinstance(update, set))
    ):
        return f"is a {kind.__name__}, and {lazy.to_dict()} does nothing to it: {_USE[kind]}"
    return None


def _trait_message(exc: Exception) -> str:
    """A traitlets error without the 'The x trait of <object at 0x..> instance' preamble."""
    message = str(exc).strip()
    message = re.sub(r"^The '[^']+' trait of .*? instance ", "", message, count=1, flags=re.S)
    message = re.sub(r"<([\w.]+\.)?(\w+) object at 0x[0-9a-f]+>", r"\2", message)
    message = re.sub(r", not the ", ", got the ", message, count=1)
    return message.rstrip(".")


def _conversion_hint(trait, value) -> str:
    """For '0' where an int belongs: say to drop the quotes."""
    if not isinstance(value, str):
        return ""
    try:
        converted = trait.from_string(value)
        trait.validate(None, converted)
    except Exception:
        return ""
    if isinstance(converted, str):
        return ""
    return f"write {converted!r} without quotes"


def validate_value(klass: type, key: str, value):
    """Load ``c.<klass>.<key> = value`` into an instance of ``klass``; return the value it
    got, or raise TraitError with traitlets' own message."""
    trait = klass.class_traits(config=True)[key]
    if isinstance(value, LazyConfigValue):
        # traitlets silently ignores an .append() on a dict: say so before it does.
        initial = _empty_like(trait)
        if initial is None:
            raise TraitError(
                f"is not a list, set or dict: .add()/.append() cannot change it ({value})"
            )
        mismatch = _lazy_mismatch(value, initial)
        if mismatch:
            raise TraitError(mismatch)
    elif isinstance(trait, EntryPointType) and isinstance(value, str):
        # Resolved first for a message that names the entry point and the import error.
        error = _resolve_class(trait, value)[1]
        if error:
            raise TraitError(error)
    config = Config()
    config[klass.__name__][key] = copy.deepcopy(value)
    try:
        instance = _configured(klass, config)
    except TraitError:
        raise
    except Exception:
        # An @observe or @validate method that needs a running hub cannot judge here:
        # the type check passed (it runs first); the hub checks the rest when it starts.
        return value
    return getattr(instance, key)


# -- checking a fragment --------------------------------------------------------------------


def _setting_line(path: Path, section: str, key: str) -> int | None:
    """The last non-comment line of a Python fragment that mentions ``section.key``."""
    if path.suffix != ".py":
        return None
    pattern = re.compile(rf"\b{re.escape(section)}\s*\.\s*{re.escape(key)}\b")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    found = None
    for number, line in enumerate(lines, start=1):
        if not line.lstrip().startswith("#") and pattern.search(line):
            found = number
    return found


def _close(word: str, candidates) -> str | None:
    matches = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def check_fragment(path: Path, config: Config, known: KnownClasses) -> list[Problem]:
    """Every setting of one fragment against the trait it sets."""
    problems = []
    for section, settings in config.items():
        if not isinstance(settings, Config):
            problems.append(
                Problem(
                    ERROR,
                    path,
                    f"c.{section}",
                    "is not a setting (settings are c.<Class>.<name>)",
                    "remove the line or name the class it belongs to",
                )
            )
            continue
        if section in known.unavailable:
            problems.append(
                Problem(
                    WARNING,
                    path,
                    section,
                    f"settings not checked: {known.unavailable[section]}",
                    "install the missing part of Ananke, then check again",
                )
            )
            continue
        if section not in known.by_name:
            guess = _close(section, list(known.by_name) + list(known.unavailable))
            problems.append(
                Problem(
                    WARNING,
                    path,
                    section,
                    f"no class {section} among those Ananke loads; typo?"
                    + (f" Did you mean {guess}?" if guess else ""),
                    "settings of a class nobody loads are ignored: fix the name or remove them",
                    _setting_line(path, section, next(iter(settings), "")),
                )
            )
            continue
        for key, value in settings.items():
            problems.extend(_check_setting(path, known, section, key, value))
    return problems


def _check_setting(path: Path, known: KnownClasses, section: str, key: str, value):
    setting = f"{section}.{key}"
    line = _setting_line(path, section, key)
    klass, trait = known.find_trait(section, key)
    if trait is None:
        elsewhere = [name for name in known.classes_with_trait(key) if name != section]
        guess = _close(key, known.trait_names(section))
        if elsewhere:
            hint = f"{key} is a setting of {elsewhere[0]}: write c.{elsewhere[0]}.{key}"
        elif guess:
            hint = f"did you mean {section}.{guess}?"
        else:
            hint = "remove the line; `jupyterhub --help-all` lists the hub's settings"
        return [Problem(ERROR, path, setting, f"{section} has no setting {key!r}", hint, line)]
    try:
        validate_value(klass, key, value)
    except TraitError as exc:
        hint = _conversion_hint(trait, value) or f"fix the value in {path.name}"
        return [Problem(ERROR, path, setting, _trait_message(exc), hint, line)]
    return []


# -- the LMS registration ---------------------------------------------------------------------


def _last_file_setting(per_file: dict[Path, Config], section: str, key: str | None):
    """The last fragment that sets ``section.key`` (or anything of ``section``)."""
    found = None
    for path, config in per_file.items():
        settings = config.get(section)
        if isinstance(settings, Config) and (key is None or key in settings):
            found = path
    return found


def _registration(merged: Config):
    from .registration import LMSRegistration

    registration = LMSRegistration()
    for key, value in merged.get("LMSRegistration", Config()).items():
        trait = LMSRegistration.class_traits(config=True).get(key)
        if trait is None:
            continue  # reported per fragment
        try:
            setattr(registration, key, validate_value(LMSRegistration, key, value))
        except TraitError:
            continue  # reported per fragment
    return registration


def _has_placeholder(value) -> bool:
    if isinstance(value, str):
        return PLACEHOLDER.lower() in value.lower()
    if isinstance(value, list | tuple | set):
        return any(_has_placeholder(v) for v in value)
    return False


def check_registration(merged: Config, per_file: dict[Path, Config], directory: Path):
    """What an LTI launch, and Kore's grade and roster calls, need from 30_lms.py."""
    registration = _registration(merged)
    problems = []
    if not registration.issuer and not registration.client_ids:
        # No LMS in 30_lms.py: LMSs register by URL (LTI Dynamic Registration).
        path = directory / LMS_FRAGMENT
        return [
            Problem(
                WARNING,
                path,
                "LMSRegistration",
                "is empty: only LMSs registered by a registration URL can launch",
                "paste a URL of `ananke lms registration-url` into the LMS (`ananke lms "
                f"list` shows the registered ones), or fill in {path.name}",
                None,
            )
        ], registration

    def where(key):
        path = _last_file_setting(per_file, "LMSRegistration", key)
        path = path or _last_file_setting(per_file, "LMSRegistration", None)
        path = path or directory / LMS_FRAGMENT
        return path, _setting_line(path, "LMSRegistration", key)

    for key in registration.class_traits(config=True):
        value = getattr(registration, key)
        if _has_placeholder(value):
            path, line = where(key)
            label = _LAUNCH_SETTINGS.get(key, "the value")
            problems.append(
                Problem(
                    ERROR,
                    path,
                    f"LMSRegistration.{key}",
                    f"still the placeholder {value!r}",
                    f"copy {label} from the LMS's tool configuration details into {path.name}",
                    line,
                )
            )
    for key in registration.missing():
        path, line = where(key)
        problems.append(
            Problem(
                ERROR,
                path,
                f"LMSRegistration.{key}",
                "is empty, and no LTI launch can succeed without it",
                f"copy {_LAUNCH_SETTINGS[key]} from the LMS's tool configuration details "
                f"into {path.name}",
                line,
            )
        )
    if not registration.access_token_url:
        path, line = where("access_token_url")
        problems.append(
            Problem(
                WARNING,
                path,
                "LMSRegistration.access_token_url",
                "is empty: Kore cannot send grades or read rosters",
                f'copy "Access token URL" from the LMS into {path.name}',
                line,
            )
        )
    if not registration.deployment_ids:
        path, line = where("deployment_ids")
        problems.append(
            Problem(
                WARNING,
                path,
                "LMSRegistration.deployment_ids",
                "is empty: every deployment of the client id may launch into the hub",
                f'list the "Deployment ID"s the LMS shows, e.g. ["1"], in {path.name}',
                line,
            )
        )
    example = [
        key
        for key in ("issuer", "authorize_url", "jwks_url", "access_token_url")
        if _EXAMPLE_HOST.search(urlparse(getattr(registration, key)).hostname or "")
    ]
    if example:
        path, line = where(example[0])
        problems.append(
            Problem(
                WARNING,
                path,
                "LMSRegistration",
                f"{', '.join(example)} still point at the example LMS "
                f"({urlparse(getattr(registration, example[0])).hostname})",
                f"set `lms` in {path.name} to your LMS's address",
                line,
            )
        )
    return problems, registration


# -- the LMS's keyset -------------------------------------------------------------------------


def fetch_jwks_problem(url: str, timeout: float = JWKS_TIMEOUT) -> str | None:
    """Fetch the platform's JWKS; None if it is one, else what is wrong with it."""
    if urlparse(url).scheme not in ("http", "https"):
        return f"{url} is not an http(s) URL"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status = response.status
            body = response.read(JWKS_MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        return f"{url} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{url} is unreachable ({reason})"
    if status != 200:
        return f"{url} answered HTTP {status}"
    if len(body) > JWKS_MAX_BYTES:
        return f"{url} answered more than {JWKS_MAX_BYTES} bytes: not a keyset"
    try:
        document = json.loads(body)
    except ValueError:
        return f"{url} did not answer JSON: not a keyset (RFC 7517 section 5)"
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        return f'{url} answered JSON without a "keys" list: not a keyset (RFC 7517 section 5)'
    if not keys:
        return f"{url} answered a keyset with no keys: no launch can be verified"
    return None


def check_jwks(registration, per_file: dict[Path, Config], directory: Path) -> list[Problem]:
    url = registration.jwks_url
    host = urlparse(url).hostname or ""
    if not url or _has_placeholder(url) or _EXAMPLE_HOST.search(host):
        return []  # already reported
    problem = fetch_jwks_problem(url)
    if problem is None:
        return []
    path = _last_file_setting(per_file, "LMSRegistration", "jwks_url") or directory / LMS_FRAGMENT
    return [
        Problem(
            WARNING,
            path,
            "LMSRegistration.jwks_url",
            problem,
            'check the URL against the LMS\'s "Public keyset URL" and that this machine '
            "reaches it (launches fail while it does not); --offline skips this check",
            _setting_line(path, "LMSRegistration", "jwks_url"),
        )
    ]


# -- what others may read ----------------------------------------------------------------------

# Setting names whose values are secrets (c.JupyterHub.services' api_token, a
# cookie_secret, a password, a client secret).
_SECRET_KEY = re.compile(r"(token|secret|password|passwd|crypt_key|private_key)$", re.I)
# A URL with a password in it: scheme://user:password@host (a PostgreSQL url).
_URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@:\s]*:[^/@\s]+@", re.I)


def _secret_settings(value, name: str) -> list[str]:
    """The settings under ``name`` (a section, a dict, a list) that hold a secret."""
    if isinstance(value, dict):
        found = []
        for key, item in value.items():
            key = str(key)
            if isinstance(item, str) and item and _SECRET_KEY.search(key):
                found.append(f"{name}.{key}")
            else:
                found.extend(_secret_settings(item, f"{name}.{key}"))
        return found
    if isinstance(value, list | tuple):
        return [s for i, item in enumerate(value) for s in _secret_settings(item, f"{name}[{i}]")]
    if isinstance(value, str) and _URL_PASSWORD.match(value):
        return [name]
    return []


def _mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def check_secret_fragments(per_file: dict[Path, Config]) -> list[Problem]:
    """A fragment that holds a secret (a password in a URL, a token) and that users
    other than its owner may read: the secret is theirs as well."""
    problems = []
    for path, config in per_file.items():
        mode = _mode(path)
        if mode is None or not mode & 0o077:
            continue
        secrets = _secret_settings(dict(config), "c")
        if secrets:
            problems.append(
                Problem(
                    WARNING,
                    path,
                    secrets[0],
                    f"holds a secret ({', '.join(secrets)}) and is readable by other "
                    f"users (mode {mode:04o})",
                    f"chmod 600 {path} (owned by the hub's user)",
                )
            )
    return problems


def check_proxy_tls(per_file: dict[Path, Config]) -> list[Problem]:
    """TLS settings the hub's proxy cannot follow: it would exit at every start."""
    from .proxy import TLS_HINT, TLS_UNSUPPORTED  # the proxy's own words

    problems = []
    for path, config in per_file.items():
        section = config.get("JupyterHub")
        for key in ("ssl_cert", "ssl_key"):
            if isinstance(section, Config) and section.get(key):
                problems.append(
                    Problem(
                        ERROR,
                        path,
                        f"JupyterHub.{key}",
                        TLS_UNSUPPORTED,
                        TLS_HINT,
                        _setting_line(path, "JupyterHub", key),
                    )
                )
    return problems


def check_state_dir(state_dir: Path) -> list[Problem]:
    """The state directory and its secrets and databases must be the hub's user's only."""
    problems = []
    state_dir = Path(state_dir)
    candidates = [state_dir, state_dir / "secrets", *sorted(state_dir.glob("*.sqlite*"))]
    for path in candidates:
        mode = _mode(path)
        if mode is None or not mode & 0o077:
            continue
        what = "directory" if path.is_dir() else "file"
        problems.append(
            Problem(
                WARNING,
                path,
                None,
                f"the state {what} is readable by other users (mode {mode:04o}); it holds "
                "the hub's keys, its database and the course registry (students' names, "
                "e-mails and grades)",
                f"chmod {'700' if path.is_dir() else '600'} {path}; the hub and Kore make "
                "it private themselves at their next start",
            )
        )
    return problems


# -- the command ------------------------------------------------------------------------------


def check_config_dir(
    directory: Path, check_network: bool = True, state_dir: Path | None = None
) -> list[Problem]:
    """Load every fragment of ``directory`` and return the problems found, errors first.

    With ``state_dir``, also whether the state directory is private.
    """
    directory = Path(directory)
    try:
        files = fragment_files(directory)
    except FragmentError as exc:
        return [Problem(ERROR, exc.path, None, exc.message)]
    problems: list[Problem] = []
    if not files:
        problems.append(
            Problem(
                WARNING,
                directory,
                None,
                "has no fragments (*.py or *.json)",
                f"copy the shipped ones with `ananke init-config {directory}`",
            )
        )
    per_file: dict[Path, Config] = {}
    merged = Config()
    for path in files:
        try:
            per_file[path] = load_fragment(path)
        except FragmentError as exc:
            problems.append(
                Problem(
                    ERROR,
                    exc.path,
                    None,
                    exc.message,
                    "fix the file; its settings are not loaded (nor checked) until then",
                    exc.line,
                )
            )
            continue
        # Config.merge keeps references to the merged sections and later merges change
        # them: merge a copy, so that each fragment's own config stays its own.
        merged.merge(copy.deepcopy(per_file[path]))

    known = load_known_classes(merged)
    for path, config in per_file.items():
        problems.extend(check_fragment(path, config, known))
    problems.extend(check_secret_fragments(per_file))
    problems.extend(check_proxy_tls(per_file))
    if state_dir is not None:
        problems.extend(check_state_dir(state_dir))
    registration_problems, registration = check_registration(merged, per_file, directory)
    problems.extend(registration_problems)
    if check_network:
        problems.extend(check_jwks(registration, per_file, directory))
    return sorted(problems, key=lambda p: (not p.is_error, str(p.file or ""), p.line or 0))


def print_report(problems: list[Problem]) -> int:
    """Print one line per problem and a summary; 1 if any is an error, else 0."""
    for problem in problems:
        print(problem.format())
    errors = sum(p.is_error for p in problems)
    warnings = len(problems) - errors
    if not problems:
        print("check-config: no problems found.")
    else:
        print(
            f"check-config: {errors} error{'s' * (errors != 1)}, "
            f"{warnings} warning{'s' * (warnings != 1)}."
            + (" Fix the errors before (re)starting the hub." if errors else "")
        )
    return 1 if errors else 0

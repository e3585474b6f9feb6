"""Loading the numbered config fragments (``config.d/NN_name.py``).

Fragments are ordinary traitlets config files (``c = get_config()``), or JSON files of
the same structure (``{"JupyterHub": {"bind_url": ...}}``, for settings written by
tools), loaded in sorted order, later fragments overriding earlier ones. Services and
roles are the exception: they are named entries (:data:`NAMED_LISTS`), and a fragment's
list adds its entries to the earlier fragments' instead of replacing them. A file ending in ``.disabled`` (such as
``80_rtc.py.disabled``) is skipped: renaming it to ``.py`` switches it on.

The hub (through the shipped ``jupyterhub_config.py``), Kore and ``ananke check-config``
all load fragments through :func:`load_fragments`, so they always agree.
"""

import copy
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from traitlets.config import Config, JSONFileConfigLoader, LazyConfigValue, PyFileConfigLoader

FRAGMENT_SUFFIXES = (".py", ".json")

#: List settings made of entries with a "name": each fragment sets its own entries, and
#: a later fragment adds to the earlier ones (an entry of the same name replaces that
#: entry) instead of replacing the whole list. So 60_culler.py's service and a later
#: fragment's never drop each other (config sets, never mutates).
NAMED_LISTS = (("JupyterHub", "services"), ("JupyterHub", "load_roles"))


class FragmentError(Exception):
    """A fragment could not be loaded. Names the file and line, says what to do."""

    def __init__(self, path: Path, line: int | None, message: str):
        self.path = Path(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line else str(self.path)
        super().__init__(f"{where}: {message}")


@dataclass
class LoadedFragments:
    """The merged config and, per fragment, the config it set on its own."""

    config: Config
    files: list[Path] = field(default_factory=list)
    per_file: dict[Path, Config] = field(default_factory=dict)


def fragment_files(directory: Path) -> list[Path]:
    """The fragments that are switched on, in load order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FragmentError(
            directory,
            None,
            "config directory not found. Create it with `ananke init-config "
            f"{directory}` or point ANANKE_CONFIG_DIR at the right one.",
        )
    return sorted(
        (p for p in directory.iterdir() if p.suffix in FRAGMENT_SUFFIXES and p.is_file()),
        key=lambda p: p.name,
    )


def line_of(exc: BaseException, path: Path) -> int | None:
    """The line of ``path`` where a config file failed (syntax error or exception)."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        return exc.lineno
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if Path(frame.filename) == path:
            return frame.lineno
    return None


def load_fragment(path: Path) -> Config:
    """Load one fragment into a fresh Config, turning any failure into a FragmentError."""
    path = Path(path)
    loader_class = JSONFileConfigLoader if path.suffix == ".json" else PyFileConfigLoader
    loader = loader_class(path.name, path=str(path.parent))
    try:
        return loader.load_config()
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        raise FragmentError(path, line_of(exc, path), message) from exc


def load_fragments(directory: Path) -> LoadedFragments:
    """Load every enabled fragment of ``directory``; stop at the first broken one."""
    merged = Config()
    result = LoadedFragments(config=merged)
    for path in fragment_files(directory):
        fragment = load_fragment(path)
        # merge() keeps references to sections: copy, so per_file stays what the file set.
        merged.merge(copy.deepcopy(fragment))
        result.files.append(path)
        result.per_file[path] = fragment
    for section, key in NAMED_LISTS:
        merged_entries = _merge_named(result.per_file, section, key)
        if merged_entries is not None:
            merged[section][key] = merged_entries
    return result


def _merge_named(per_file: dict[Path, Config], section: str, key: str) -> list | None:
    """The entries of ``c.<section>.<key>`` over all fragments, merged by name."""
    by_name: dict[str, dict] = {}
    found = False
    for path, fragment in per_file.items():
        if section not in fragment or key not in fragment[section]:
            continue
        found = True
        value = fragment[section][key]
        # `.append(...)` in a fragment leaves a lazy value: its own entries.
        entries = value.get_value([]) if isinstance(value, LazyConfigValue) else value
        if not isinstance(entries, list | tuple):
            raise FragmentError(
                path, None, f"c.{section}.{key} must be a list of dicts, not {entries!r}"
            )
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise FragmentError(
                    path,
                    None,
                    f"every entry of c.{section}.{key} needs a \"name\" (entries of "
                    f"several fragments are merged by name); {entry!r} has none",
                )
            by_name[entry["name"]] = copy.deepcopy(entry)
    return list(by_name.values()) if found else None


def resolved_setting(config: Config, sections, name: str, default):
    """What a Configurable whose config sections are ``sections`` gets for ``name``.

    traitlets gives an instance the settings of its own class's section and of every
    parent class's (``c.LTI13Authenticator.provision_courses`` reaches the
    ``AnankeLTI13Authenticator``), merged parents first; ``config.<Class>.get(name)``
    sees one section only. ``sections``: ``cls.section_names()`` (see
    :func:`class_setting`); ``default``: the trait's default.
    """
    value = default
    for section in sections:
        found = config.get(section)  # dict.get: no empty section is made
        if isinstance(found, Config) and name in found:
            value = found[name]
    if isinstance(value, LazyConfigValue):
        value = value.get_value(default)
    return value


def class_setting(config: Config, cls, name: str):
    """``cls(config=config).<name>`` without making one: the hub config reads the
    settings it depends on before JupyterHub builds the classes that own them."""
    trait = cls.class_traits()[name]
    return resolved_setting(config, cls.section_names(), name, trait.default())

"""The fragment loader: order, switched-off files, merging, and errors that name file and line."""

import pytest
from traitlets.config import Config

from ananke_hub.fragments import FragmentError, fragment_files, load_fragment, load_fragments


def write(directory, name, *lines):
    path = directory / name
    path.write_text("\n".join(["c = get_config()  # noqa", *lines]) + "\n")
    return path


def test_load_order_later_overrides_earlier(tmp_path):
    write(tmp_path, "50_late.py", 'c.JupyterHub.bind_url = "http://:2"')
    write(
        tmp_path, "10_early.py", 'c.JupyterHub.bind_url = "http://:1"', "c.Spawner.cpu_limit = 1.0"
    )
    # Sorted by name, not by creation: "9_" sorts after "50_".
    write(tmp_path, "9_last.py", "c.Spawner.cpu_limit = 3.0")
    loaded = load_fragments(tmp_path)
    assert [p.name for p in loaded.files] == ["10_early.py", "50_late.py", "9_last.py"]
    assert loaded.config.JupyterHub.bind_url == "http://:2"
    assert loaded.config.Spawner.cpu_limit == 3.0


def test_disabled_and_other_files_are_skipped(tmp_path):
    write(tmp_path, "10_on.py", "c.Spawner.cpu_limit = 1.0")
    write(tmp_path, "80_rtc.py.disabled", "c.Spawner.cpu_limit = 9.0", "raise SystemExit(1)")
    (tmp_path / "README.txt").write_text("not a fragment")
    (tmp_path / "90_dir.py").mkdir()
    assert [p.name for p in fragment_files(tmp_path)] == ["10_on.py"]
    assert load_fragments(tmp_path).config.Spawner.cpu_limit == 1.0


def test_json_fragment_is_loaded_in_order(tmp_path):
    write(tmp_path, "10_base.py", 'c.JupyterHub.bind_url = "http://:1"')
    (tmp_path / "20_tool.json").write_text('{"JupyterHub": {"bind_url": "http://:3"}}')
    assert load_fragments(tmp_path).config.JupyterHub.bind_url == "http://:3"


def test_add_to_admin_users_merges_across_fragments(tmp_path):
    write(tmp_path, "20_users.py", 'c.Authenticator.admin_users.add("u1")')
    write(tmp_path, "21_more_users.py", 'c.Authenticator.admin_users.add("u2")')
    merged = load_fragments(tmp_path).config
    assert merged.Authenticator.admin_users.get_value(set()) == {"u1", "u2"}


def test_add_after_assignment_extends_it(tmp_path):
    write(tmp_path, "20_users.py", 'c.Authenticator.admin_users = {"u1"}')
    write(tmp_path, "21_more_users.py", 'c.Authenticator.admin_users.add("u2")')
    merged = load_fragments(tmp_path).config
    assert merged.Authenticator.admin_users == {"u1", "u2"}


def test_per_file_holds_only_what_the_file_set(tmp_path):
    first = write(tmp_path, "10_a.py", 'c.JupyterHub.bind_url = "http://:1"')
    write(tmp_path, "20_b.py", 'c.JupyterHub.bind_url = "http://:2"')
    assert load_fragments(tmp_path).per_file[first].JupyterHub.bind_url == "http://:1"


def test_syntax_error_carries_file_and_line(tmp_path):
    path = write(tmp_path, "10_bad.py", "", "c.Spawner.args = [")
    with pytest.raises(FragmentError) as info:
        load_fragments(tmp_path)
    assert info.value.path == path
    assert info.value.line == 3
    assert "SyntaxError" in info.value.message
    assert str(info.value).startswith(f"{path}:3: ")


def test_exception_carries_file_and_line(tmp_path):
    path = write(tmp_path, "10_bad.py", "limits = {}", 'c.Spawner.mem_limit = limits["memory"]')
    with pytest.raises(FragmentError) as info:
        load_fragment(path)
    assert (info.value.path, info.value.line) == (path, 3)
    assert "KeyError" in info.value.message


def test_broken_json_names_the_file(tmp_path):
    path = tmp_path / "20_tool.json"
    path.write_text('{"JupyterHub": ')
    with pytest.raises(FragmentError) as info:
        load_fragment(path)
    assert info.value.path == path
    assert "JSONDecodeError" in info.value.message


def test_missing_directory_says_what_to_do(tmp_path):
    missing = tmp_path / "config.d"
    with pytest.raises(FragmentError) as info:
        load_fragments(missing)
    message = str(info.value)
    assert str(missing) in message
    assert f"ananke init-config {missing}" in message
    assert "ANANKE_CONFIG_DIR" in message


def test_empty_directory_gives_empty_config(tmp_path):
    loaded = load_fragments(tmp_path)
    assert loaded.config == Config()
    assert loaded.files == []


# --- services and roles: named entries, merged across fragments --------------------------------


def test_a_later_fragments_services_and_roles_keep_the_earlier_ones(tmp_path):
    write(
        tmp_path,
        "60_culler.py",
        'c.JupyterHub.services = [{"name": "idle-culler", "command": ["culler"]}]',
        'c.JupyterHub.load_roles = [{"name": "idle-culler", "services": ["idle-culler"]}]',
    )
    write(
        tmp_path,
        "65_announce.py",
        'c.JupyterHub.services = [{"name": "announce", "url": "http://127.0.0.1:9"}]',
        'c.JupyterHub.load_roles = [{"name": "announcer", "services": ["announce"]}]',
    )
    # .append() in a third one adds too; an entry of the same name replaces that entry.
    write(
        tmp_path,
        "70_more.py",
        'c.JupyterHub.services.append({"name": "idle-culler", "command": ["culler", "-v"]})',
    )
    loaded = load_fragments(tmp_path)
    assert loaded.config.JupyterHub.services == [
        {"name": "idle-culler", "command": ["culler", "-v"]},
        {"name": "announce", "url": "http://127.0.0.1:9"},
    ]
    assert [r["name"] for r in loaded.config.JupyterHub.load_roles] == ["idle-culler", "announcer"]
    # Each fragment's own settings stay what it set.
    assert [
        s["name"] for s in loaded.per_file[tmp_path / "65_announce.py"].JupyterHub.services
    ] == ["announce"]


@pytest.mark.parametrize(
    "line, message",
    [
        ('c.JupyterHub.services = [{"url": "http://x"}]', 'needs a "name"'),
        ('c.JupyterHub.load_roles = {"name": "x"}', "must be a list of dicts"),
    ],
)
def test_a_service_or_role_without_a_name_is_refused(tmp_path, line, message):
    write(tmp_path, "65_bad.py", line)
    with pytest.raises(FragmentError, match=message) as refused:
        load_fragments(tmp_path)
    assert refused.value.path.name == "65_bad.py"


def test_the_hub_keeps_the_culler_and_kore_when_a_later_fragment_adds_a_service(
    tmp_path, monkeypatch
):
    import shutil

    from ananke_hub.hubconfig import KORE_ROLE, KORE_SERVICE, configure
    from ananke_hub.paths import SHIPPED_CONFIG_DIR, StateLayout

    cfg_dir = tmp_path / "config.d"
    shutil.copytree(SHIPPED_CONFIG_DIR, cfg_dir)
    write(
        cfg_dir,
        "65_announce.py",
        'c.JupyterHub.services = [{"name": "announce", "url": "http://127.0.0.1:9"}]',
        'c.JupyterHub.load_roles = [{"name": "announcer", "services": ["announce"], '
        '"scopes": ["read:users"]}]',
    )
    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", "")  # configure() sets it; restored after
    monkeypatch.setattr("ananke_hub.hubconfig.check_root_labs", lambda c: None)
    c = Config()
    configure(c, cfg_dir, StateLayout(tmp_path / "state"))
    assert [s["name"] for s in c.JupyterHub.services] == ["idle-culler", "announce", KORE_SERVICE]
    assert {"idle-culler", "announcer", "user", KORE_ROLE} <= {
        r["name"] for r in c.JupyterHub.load_roles
    }

"""Build steps of ananke-nbgrader: one Jupyter kernel per environment in ``kernels/``.

Each ``kernels/<name>.txt`` lists the packages of one environment, one per line (``#``
starts a comment; a line ``# display-name: ...`` names the kernel in JupyterLab). The
same names work on PyPI and conda-forge for the usual teaching stack. Two ways to
install them, chosen by ``--mode`` (the image's ``KERNELS`` build argument):

``venv``
    A Python venv per environment in ``/opt/ananke/kernels/<name>`` with the packages
    from PyPI, and an ipykernel kernelspec in ``/usr/local/share/jupyter/kernels/<name>``
    (a kernel directory every lab reads). The kernel runs the venv's Python directly.
``conda``
    The original's way: micromamba makes ``/opt/ananke/kernels/conda`` (conda itself) and
    one conda environment per file in ``.../conda/envs/<name>`` from conda-forge; the labs' server
    lists them through ``nb_conda_kernels`` (conda-forge only, not on PyPI), which runs
    ``conda activate`` before each kernel (needed by packages that read the activation's
    variables). Needs conda-forge to be reachable at build time.
``auto``
    ``conda`` if conda-forge answers, ``venv`` otherwise.

Two commands, both run as root during ``podman build``:

``build``
    in a stage of its own on plain Debian (``/usr/bin/python3``, the same Python as the
    hub venv's), so that the kernels do not depend on Ananke's code;
``activate``
    in the final image with the hub venv's Python, after the stage's
    ``/opt/ananke/kernels`` was copied in: for conda kernels, nb_conda_kernels goes into
    the hub venv (where the labs' server runs) with its config; nothing for venv kernels.

Not part of the installed package.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

KERNEL_ROOT = Path("/opt/ananke/kernels")
#: Which kind of kernels the image has ("venv" or "conda").
MODE_FILE = KERNEL_ROOT / "MODE"
KERNELSPEC_PREFIX = Path("/usr/local")
CONDA_ROOT = KERNEL_ROOT / "conda"
CONDA_FORGE = "https://conda.anaconda.org/conda-forge"
#: micromamba's own release channel: one static binary in a tar.bz2 (bin/micromamba).
MICROMAMBA_URL = "https://micro.mamba.pm/api/micromamba/linux-64/latest"
#: Jupyter server config of the labs' server (the hub venv's sys.prefix config path).
SERVER_CONFIG_D = Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d"


def read_environments(directory: Path) -> dict[str, tuple[str, list[str]]]:
    """``{name: (display name, packages)}`` from ``<directory>/<name>.txt``."""
    envs = {}
    for spec in sorted(directory.glob("*.txt")):
        display, packages = f"Python 3 ({spec.stem})", []
        for line in spec.read_text().splitlines():
            text = line.strip()
            if text.startswith("# display-name:"):
                display = text.split(":", 1)[1].strip()
            elif text and not text.startswith("#"):
                packages.append(text)
        envs[spec.stem] = (display, packages)
    if not envs:
        raise SystemExit(f"No environments (*.txt) in {directory}")
    return envs


def run(argv: list[str], **kwargs) -> None:
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, check=True, **kwargs)


def conda_forge_reachable(timeout: float = 10) -> bool:
    request = urllib.request.Request(f"{CONDA_FORGE}/noarch/", method="HEAD")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 (fixed https URL)
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


# -- venv + ipykernel ------------------------------------------------------------------------


def install_venv_kernels(envs: dict[str, tuple[str, list[str]]]) -> None:
    pip_env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
               "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt"}
    for name, (display, packages) in envs.items():
        prefix = KERNEL_ROOT / name
        run(["/usr/bin/python3", "-m", "venv", str(prefix)])
        run([str(prefix / "bin/pip"), "install", "--no-cache-dir", "--progress-bar=off",
             "ipykernel", *packages], env=pip_env)
        run([str(prefix / "bin/python"), "-m", "ipykernel", "install",
             f"--prefix={KERNELSPEC_PREFIX}", f"--name={name}", f"--display-name={display}"])


# -- conda + nb_conda_kernels ------------------------------------------------------------------


def fetch_micromamba(dest: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "micromamba.tar.bz2"
        with urllib.request.urlopen(MICROMAMBA_URL, timeout=120) as resp:  # noqa: S310
            archive.write_bytes(resp.read())
        with tarfile.open(archive) as tar:
            member = tar.getmember("bin/micromamba")
            source = tar.extractfile(member)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(source.read())
    dest.chmod(0o755)
    return dest


def install_conda_kernels(envs: dict[str, tuple[str, list[str]]]) -> None:
    # micromamba only builds; it is not needed in the image.
    micromamba = fetch_micromamba(Path(tempfile.mkdtemp()) / "micromamba")
    python = f"python={sys.version_info.major}.{sys.version_info.minor}"
    common = [str(micromamba), "create", "--yes", "--root-prefix", str(CONDA_ROOT),
              "--override-channels", "--channel", "conda-forge"]
    env = {**os.environ, "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"}
    # The base prefix holds conda itself (nb_conda_kernels asks `conda info` for the
    # environments and uses `conda activate`) and nb_conda_kernels for the hub venv's
    # Python version, from which the pure-Python package is copied below.
    run([*common, "--prefix", str(CONDA_ROOT), "conda", "nb_conda_kernels", python], env=env)
    for name, (_display, packages) in envs.items():
        run([*common, "--prefix", str(CONDA_ROOT / "envs" / name), "ipykernel", *packages],
            env=env)


def activate_conda_kernels() -> None:
    """nb_conda_kernels (pure Python, from the conda base made for this Python version)
    into the hub venv, its server config, and ``conda`` on the labs' PATH."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    source = CONDA_ROOT / "lib" / version / "site-packages" / "nb_conda_kernels"
    if not source.is_dir():
        raise SystemExit(f"{source} is missing: the conda base was made for another Python")
    target = Path(sysconfig.get_paths()["purelib"]) / "nb_conda_kernels"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    # nb_conda_kernels finds conda through CONDA_EXE or PATH; labs have /usr/local/bin.
    link = Path("/usr/local/bin/conda")
    link.unlink(missing_ok=True)
    link.symlink_to(CONDA_ROOT / "bin" / "conda")
    SERVER_CONFIG_D.mkdir(parents=True, exist_ok=True)
    (SERVER_CONFIG_D / "ananke-conda-kernels.json").write_text(json.dumps({
        "ServerApp": {"kernel_spec_manager_class": "nb_conda_kernels.CondaKernelSpecManager"},
        # Only the environments made here, not the conda base itself.
        "CondaKernelSpecManager": {"env_filter": f"^{CONDA_ROOT}$"},
    }, indent=2) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="make the environments and their kernels")
    build.add_argument("--mode", choices=["auto", "venv", "conda"], default="auto")
    build.add_argument("--environments", type=Path, required=True,
                       help="directory of <name>.txt package lists")
    sub.add_parser("activate", help="make the labs' server list the kernels (final image)")
    args = parser.parse_args(argv)

    if args.command == "activate":
        mode = MODE_FILE.read_text().strip()
        if mode == "conda":
            activate_conda_kernels()
        names = sorted(p.name for p in KERNEL_ROOT.iterdir() if p.is_dir())
        print(f"{mode} kernels: {', '.join(names)}")
        return 0

    envs = read_environments(args.environments)
    mode = args.mode
    if mode == "auto":
        mode = "conda" if conda_forge_reachable() else "venv"
        print(f"KERNELS=auto: conda-forge {'answers' if mode == 'conda' else 'is not reachable'}"
              f", installing {mode} kernels", flush=True)
    KERNEL_ROOT.mkdir(parents=True, exist_ok=True)
    if mode == "conda":
        install_conda_kernels(envs)
    else:
        install_venv_kernels(envs)
    MODE_FILE.write_text(mode + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Dockerfile, checked without a Docker engine (none exists on this machine, so the image
itself is never built here): the runtime stage installs the Debian package of every shared
library that `ldd` reports for the built kvstore and kvctl, the build stage has the -dev
packages scripts/install-deps.sh builds with, the build context (.dockerignore) holds what the
build stage copies and configures from, and the image's user, ports, volume and entrypoint are
what the manifests expect."""
import os
import re
import shlex
import shutil
import subprocess

import pytest

from conftest import KVCTL_BIN, KVSTORE_BIN, ROOT

# Sanitizer runtimes appear in ldd of an ASan/UBSan build (scripts/test.sh runs these tests on
# one); the image's build stage never enables sanitizers.
SANITIZER_PACKAGE = re.compile(r"^lib(a|ub|l|t|hwa)san\d+$")
# -dev packages of install-deps.sh that the image does not build with.
NOT_IN_IMAGE = {"libclang-rt-14-dev": "libFuzzer runtime, for the fuzz build only"}


def stages():
    """{stage name: (base image, [instructions, continuation lines joined])}"""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    result = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)$", line, re.IGNORECASE)
        if match:
            current = match.group(2)
            result[current] = (match.group(1), [])
        elif current:
            result[current][1].append(line)
    return result


def apt_packages(instructions):
    """Packages named by `apt-get install` in the stage's RUN instructions."""
    packages = []
    for instruction in instructions:
        if not instruction.startswith("RUN "):
            continue
        for command in re.split(r"&&|;", instruction[4:]):
            words = shlex.split(command)
            if "apt-get" in words and "install" in words:
                packages += [w for w in words[words.index("install") + 1:]
                             if not w.startswith("-")]
    return packages


def owning_package(library):
    """The Debian package that owns a shared library path (usr-merged paths tried both ways)."""
    candidates = [library, os.path.realpath(library)]
    for path in list(candidates):
        if path.startswith("/lib"):
            candidates.append("/usr" + path)
        elif path.startswith("/usr/lib"):
            candidates.append(path[len("/usr"):])
    for path in candidates:
        result = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout.split(":")[0].strip()
    raise AssertionError(f"no Debian package owns {library}")


def test_two_stages_on_bookworm():
    s = stages()
    assert list(s) == ["build", "runtime"]
    assert s["build"][0] == "debian:bookworm"
    assert s["runtime"][0] == "debian:bookworm-slim"


@pytest.mark.parametrize("binary", [KVSTORE_BIN, KVCTL_BIN], ids=["kvstore", "kvctl"])
def test_runtime_stage_installs_every_library_the_binaries_load(binary):
    if shutil.which("dpkg") is None:
        pytest.skip("dpkg is missing: not a Debian machine")
    runtime = set(apt_packages(stages()["runtime"][1]))
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libraries = re.findall(r"=>\s+(/\S+)", out)
    assert libraries, out
    needed = {owning_package(lib) for lib in libraries}
    needed = {p for p in needed if not SANITIZER_PACKAGE.match(p)}
    missing = sorted(needed - runtime)
    assert not missing, f"{os.path.basename(binary)} loads libraries of {missing}, which the " \
                        f"runtime stage does not install"


def test_runtime_stage_has_no_development_packages():
    runtime = apt_packages(stages()["runtime"][1])
    assert runtime
    assert not [p for p in runtime if p.endswith("-dev") or p in ("build-essential", "cmake")]
    assert any("--no-install-recommends" in i for i in stages()["runtime"][1])


def test_build_stage_has_the_dev_packages_of_install_deps():
    script = (ROOT / "scripts/install-deps.sh").read_text()
    listed = re.search(r"packages=\((.*?)\)", script, re.S).group(1)
    dev = {p for p in listed.split() if p.endswith("-dev")} - set(NOT_IN_IMAGE)
    build = set(apt_packages(stages()["build"][1]))
    assert dev <= build, f"missing from the build stage: {sorted(dev - build)}"


def test_build_context_holds_what_the_build_stage_needs(tmp_path):
    """Copies what the COPY instructions name, as .dockerignore lets it through, and configures
    the project from that alone with the build stage's CMake options (no compile)."""
    ignore = (ROOT / ".dockerignore").read_text().split()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore  # everything else (build trees, data, .git) stays out
    copies = [i.split()[1:-1] for i in stages()["build"][1]
              if i.startswith("COPY ") and "--from" not in i]
    sources = [s for c in copies for s in c]
    assert sorted(sources) == sorted(allowed)
    context = tmp_path / "context"
    for source in sources:
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(src, context / source)
        else:
            (context / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, context / source)
    run = [i for i in stages()["build"][1] if "cmake -S" in i][0]
    assert '-DKVSTORE_VERSION="${KVSTORE_VERSION}"' in run  # the build arg carries the version
    assert "-DKVSTORE_TESTS=OFF" in run
    result = subprocess.run(["cmake", "-S", str(context), "-B", str(tmp_path / "build"),
                             "-DCMAKE_BUILD_TYPE=Release", "-DKVSTORE_TESTS=OFF",
                             "-DKVSTORE_VERSION=9.8.7-test"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    cache = (tmp_path / "build/CMakeCache.txt").read_text()
    assert "KVSTORE_VERSION:STRING=9.8.7-test" in cache


def test_version_flag_prints_the_configured_version():
    out = subprocess.run([KVSTORE_BIN, "--version"], capture_output=True, text=True, timeout=20)
    assert re.fullmatch(r"kvstore \S+\n", out.stdout), out.stdout


def test_runtime_image_runs_as_65532_with_data_volume_and_ports():
    runtime = stages()["runtime"][1]
    assert "ARG KVSTORE_VERSION=0.1.0" in runtime
    assert "USER 65532:65532" in runtime
    assert "WORKDIR /data" in runtime
    assert 'VOLUME ["/data"]' in runtime
    assert "EXPOSE 5555 8080" in runtime
    assert 'ENTRYPOINT ["kvstore"]' in runtime
    copy = [i for i in runtime if i.startswith("COPY --from=build")]
    assert copy == ["COPY --from=build /out/kvstore /out/kvctl /usr/local/bin/"]
    run = " ".join(i for i in runtime if i.startswith("RUN "))
    assert "--uid 65532" in run and "chown 65532:65532 /data" in run

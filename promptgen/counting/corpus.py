"""Caption files: which files an input names, what they hold, and reading them in bounded batches.

An input is a path, a glob or an fsspec URL (`s3://bucket/laion/*.parquet`, where its filesystem
package is installed); a folder stands for the caption files inside it. A file's format comes
from its name: parquet, CSV, TSV, JSONL or plain text (one caption a line), each possibly
compressed (.gz, .bz2, .xz, .zst) except parquet. A file is cut into parts, the unit of work and of
resuming: a parquet file into runs of row groups, any other file is one part. Every reader yields
pyarrow string arrays of at most `batch_rows` captions, so memory never grows with the corpus.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from typing import Any, Iterator

from promptgen.errors import PromptgenError
from promptgen.redact import redact, redact_url

__all__ = ["FORMATS", "CorpusFile", "Part", "CorpusError", "resolve_inputs", "plan_parts", "read_part",
           "corpus_sha256", "clean_error", "shown_url"]

FORMATS = ("parquet", "csv", "tsv", "jsonl", "text")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl",
             ".ndjson": "jsonl", ".json": "jsonl", ".txt": "text", ".text": "text"}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
_FINGERPRINT_BYTES = 1 << 20
PART_ROWS = 250_000  # row groups are gathered into parts of about this many rows


class CorpusError(Exception):
    """A file or part that cannot be read: reported, skipped and counted (or fatal with --strict)."""


@dataclass(frozen=True)
class CorpusFile:
    url: str            # as fsspec opens it: a local path, or protocol://...
    format: str
    size: int
    fingerprint: str    # sha256 of the size, the first and the last MiB
    error: str | None = None  # why it could not even be sized or fingerprinted (reported as unreadable)

    @property
    def shown(self) -> str:
        """The URL as manifests, journals and messages hold it: no user:password@, no signed query."""
        return shown_url(self.url)

    def to_json(self) -> dict:
        return {"path": self.shown, "format": self.format, "size": self.size, "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class Part:
    file: CorpusFile
    index: int                      # the part's number within its file
    row_groups: tuple[int, ...] = ()
    rows: int | None = None         # known for parquet (its footer), else None

    @property
    def key(self) -> str:
        """The part's identity in the journal: its file, the file's content, and its row groups."""
        groups = f"{self.row_groups[0]}-{self.row_groups[-1]}" if self.row_groups else "all"
        return f"{self.file.shown}#{self.file.fingerprint[:16]}#{self.file.format}#{groups}"

    def to_json(self) -> dict:
        return {"file": asdict(self.file), "index": self.index, "row_groups": list(self.row_groups), "rows": self.rows}

    @staticmethod
    def from_json(data: dict) -> "Part":
        return Part(CorpusFile(**data["file"]), data["index"], tuple(data["row_groups"]), data["rows"])


def _filesystem(url: str) -> tuple[Any, str]:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        protocol = url.split("://", 1)[0]
        raise PromptgenError(f"cannot open {url}: {exc}",
                             f"install the fsspec filesystem for {protocol}:// (e.g. s3fs, gcsfs, adlfs), or copy "
                             f"the files to a local folder") from None
    return fs, path


def file_format(name: str, forced: str | None = None) -> str:
    if forced:
        return forced
    lower = name.lower()
    for compression in _COMPRESSIONS:
        if lower.endswith(compression):
            lower = lower[: -len(compression)]
    for suffix, fmt in _SUFFIXES.items():
        if lower.endswith(suffix):
            return fmt
    raise PromptgenError(f"cannot tell the format of {name} from its name",
                         f"name it with --format ({', '.join(FORMATS)}), or give files ending in "
                         + ", ".join(sorted(_SUFFIXES)))


def _fingerprint(fs: Any, path: str, size: int) -> str:
    digest = hashlib.sha256(str(size).encode())
    with fs.open(path, "rb") as handle:
        digest.update(handle.read(_FINGERPRINT_BYTES))
        if size > 2 * _FINGERPRINT_BYTES:
            handle.seek(size - _FINGERPRINT_BYTES)
        digest.update(handle.read(_FINGERPRINT_BYTES))
    return digest.hexdigest()


def resolve_inputs(inputs: list[str], forced_format: str | None = None) -> list[CorpusFile]:
    """The files the inputs name, each once, in a fixed order (sorted within an input)."""
    if not inputs:
        raise PromptgenError("no caption files given", "name them with --captions PATH (globs and URLs work)")
    found: dict[str, CorpusFile] = {}
    for given in inputs:
        fs, path = _filesystem(given)
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        shown = shown_url(given)
        try:
            paths = sorted(fs.glob(path)) if any(ch in path for ch in "*?[") else [path]
            if not any(ch in path for ch in "*?[") and not fs.exists(path):
                raise PromptgenError(f"caption file {shown} does not exist",
                                     "check the path (globs and fsspec URLs work)")
            files = []
            for candidate in paths:
                if fs.isdir(candidate):
                    files += sorted(p for p in fs.find(candidate) if _known(p))
                else:
                    files.append(candidate)
        except PromptgenError:
            raise
        except Exception as exc:  # credentials refused, a bucket that does not exist, a network error
            raise PromptgenError(f"cannot list {shown}: {redact(f'{type(exc).__name__}: {exc}')}",
                                 "check the URL and the filesystem's credentials") from None
        if not files:
            raise PromptgenError(f"{given} matches no caption file",
                                 "check the pattern; files end in " + ", ".join(sorted(_SUFFIXES)))
        for file_path in files:
            url = file_path if protocol in ("file", "local") else fs.unstrip_protocol(file_path)
            if url in found:
                continue
            fmt = file_format(file_path, forced_format)
            _check_codec(file_path)
            try:
                size = int(fs.size(file_path))
                found[url] = CorpusFile(url, fmt, size, _fingerprint(fs, file_path, size))
            except Exception as exc:  # a broken link, a file deleted while listing, access refused
                found[url] = CorpusFile(url, fmt, -1, "", redact(f"{type(exc).__name__}: {exc}"))
    return list(found.values())


def shown_url(url: str) -> str:
    """A URL with its credentials (user:password@, signed or keyed query) taken out; others as given
    (redact_url would also rewrite memory:///x as memory:/x)."""
    from urllib.parse import urlsplit

    if "://" not in url:
        return url
    parts = urlsplit(url)
    return (redact_url(url) or url) if "@" in parts.netloc or parts.query else url


def clean_error(message: str, file: CorpusFile) -> str:
    """An error about a file as it may be stored: its URL's credentials out, known secrets out."""
    return redact(message.replace(file.url, file.shown))


def _check_codec(path: str) -> None:
    """A compressed file whose codec fsspec cannot load would be read as garbage: refused, naming the package."""
    from fsspec.utils import infer_compression

    lower = path.lower()
    for suffix, package in ((".zst", "zstandard"), (".xz", "lzma"), (".bz2", "bz2"), (".gz", "gzip")):
        if lower.endswith(suffix) and not lower.endswith(".parquet" + suffix) and infer_compression(path) is None:
            raise PromptgenError(f"{path} is {suffix[1:]}-compressed and fsspec has no codec for it",
                                 f"pip install {package}, or decompress the file")


def _known(path: str) -> bool:
    try:
        file_format(path)
        return True
    except PromptgenError:
        return False


def corpus_sha256(files: list[CorpusFile]) -> str:
    """One hash of the corpus: every file's name, size and fingerprint."""
    return hashlib.sha256(json.dumps([f.to_json() for f in files]).encode()).hexdigest()


def _parquet(file: CorpusFile) -> Any:
    import pyarrow.parquet as pq

    fs, path = _filesystem(file.url)
    handle = fs.open(path, "rb")
    try:
        return pq.ParquetFile(handle), handle
    except Exception as exc:
        handle.close()
        raise CorpusError(f"not a readable parquet file ({type(exc).__name__}: {exc})") from None


def plan_parts(file: CorpusFile, column: str) -> list[Part]:
    """The parts of a file; the caption column is checked here, before any scanning (a missing
    column is an error that lists the columns the file has). A file that cannot be opened raises
    CorpusError."""
    if file.error:
        raise CorpusError(file.error)
    if file.format != "parquet":
        if file.format in ("csv", "tsv"):
            _check_column(file, _csv_columns(file), column)
        elif file.format == "jsonl":
            _check_jsonl_column(file, column)
        return [Part(file, 0)]
    parquet, handle = _parquet(file)
    try:
        _check_column(file, parquet.schema_arrow.names, column)
        parts, groups, rows = [], [], 0
        for group in range(parquet.num_row_groups):
            groups.append(group)
            rows += parquet.metadata.row_group(group).num_rows
            if rows >= PART_ROWS:
                parts.append(Part(file, len(parts), tuple(groups), rows))
                groups, rows = [], 0
        if groups or not parts:
            parts.append(Part(file, len(parts), tuple(groups), rows))
        return parts
    finally:
        handle.close()


def _check_column(file: CorpusFile, columns: list[str], column: str) -> None:
    if column not in columns:
        raise PromptgenError(f"{file.shown} has no column {column!r}; its columns: {', '.join(map(repr, columns))}",
                             "name the caption column with --column")


def _open_text(file: CorpusFile) -> Any:
    import fsspec

    return fsspec.open(file.url, "rb", compression="infer").open()


def _csv_columns(file: CorpusFile) -> list[str]:
    """The header row alone, read with the csv module: a pyarrow reader would parse (and refuse) the
    rows of its first block too, and one dropped after its schema is read may still be reading on
    pyarrow's IO threads when Python exits, which aborts the process."""
    import csv

    try:
        with _open_text(file) as handle:
            header = next(csv.reader(io.TextIOWrapper(handle, encoding="utf-8-sig", newline=""),
                                     delimiter=_delimiter(file),
                                     quoting=csv.QUOTE_NONE if file.format == "tsv" else csv.QUOTE_MINIMAL), None)
    except Exception as exc:
        raise CorpusError(f"cannot read the header ({type(exc).__name__}: {exc})") from None
    if header is None:
        raise CorpusError("cannot read the header: the file is empty")
    return header


def _delimiter(file: CorpusFile) -> str:
    return "\t" if file.format == "tsv" else ","


def _quoting(file: CorpusFile) -> dict:
    """CSV quotes fields (a caption may hold commas and line breaks); TSV has no quoting (captions
    dumps like CC3M's are raw, and a caption that opens a quote would swallow the lines after it).
    Quote characters in a raw TSV field stay in the caption, where REAL's rule drops them anyway."""
    if file.format == "tsv":
        return {"delimiter": "\t", "quote_char": False, "newlines_in_values": False}
    return {"delimiter": ",", "newlines_in_values": True}


@dataclass
class Unreadable:
    rows: int = 0  # rows skipped inside a readable file (a broken CSV row, a JSONL line that is not JSON)


def read_part(part: Part, column: str, batch_rows: int, unreadable: Unreadable) -> Iterator[Any]:
    """The part's captions as pyarrow string arrays of at most `batch_rows`; rows that cannot be
    read are skipped and added to `unreadable`; a part that cannot be read at all raises CorpusError."""
    reader = {"parquet": _read_parquet, "csv": _read_csv, "tsv": _read_csv, "jsonl": _read_jsonl,
              "text": _read_text}[part.file.format]
    try:
        yield from reader(part, column, batch_rows, unreadable)
    except CorpusError:
        raise
    except Exception as exc:  # a corrupt page, a cut-off gzip stream, bytes that are not UTF-8
        raise CorpusError(f"{type(exc).__name__}: {exc}") from None


def _read_parquet(part: Part, column: str, batch_rows: int, unreadable: Unreadable) -> Iterator[Any]:
    parquet, handle = _parquet(part.file)
    try:
        for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=list(part.row_groups), columns=[column]):
            yield _as_text(batch.column(0), column)
    finally:
        handle.close()


def _as_text(captions: Any, column: str) -> Any:
    """A parquet column as the string array every reader yields: a dictionary-encoded (pandas'
    categorical), large, binary or all-null column is cast; a column of another type is no text."""
    import pyarrow as pa

    kind = captions.type.value_type if pa.types.is_dictionary(captions.type) else captions.type
    if pa.types.is_string(captions.type):
        return captions
    if any(test(kind) for test in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
                                   pa.types.is_large_binary, pa.types.is_null)):
        return captions.cast(pa.string())  # bytes that are not UTF-8 fail here: the part is unreadable
    raise CorpusError(f"column {column!r} holds {captions.type}, not text")


def _read_csv(part: Part, column: str, batch_rows: int, unreadable: Unreadable) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    def skip(row: Any) -> str:
        unreadable.rows += 1
        return "skip"

    with _open_text(part.file) as handle:
        reader = pacsv.open_csv(
            handle, read_options=pacsv.ReadOptions(block_size=1 << 22),
            parse_options=pacsv.ParseOptions(**_quoting(part.file), invalid_row_handler=skip),
            # bytes, decoded below: one caption that is not UTF-8 must not lose the whole file
            convert_options=pacsv.ConvertOptions(include_columns=[column], column_types={column: pa.binary()}))
        for batch in reader:
            captions = _decoded(batch.column(0), unreadable)
            for start in range(0, len(captions), batch_rows):
                yield captions.slice(start, batch_rows)


def _decoded(raw: Any, unreadable: Unreadable) -> Any:
    """Binary captions as strings; a caption that is not UTF-8 is an unreadable row, left out."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(raw, pa.string())
    except pa.ArrowInvalid:
        captions = []
        for value in raw.to_pylist():
            try:
                captions.append(None if value is None else value.decode("utf-8"))
            except UnicodeDecodeError:
                unreadable.rows += 1
        return pa.array(captions, pa.string())


def _read_lines(part: Part, batch_rows: int) -> Iterator[list[bytes]]:
    with _open_text(part.file) as handle:
        lines = []
        for line in io.BufferedReader(handle, 1 << 20):
            lines.append(line)
            if len(lines) >= batch_rows:
                yield lines
                lines = []
        if lines:
            yield lines


def _read_jsonl(part: Part, column: str, batch_rows: int, unreadable: Unreadable) -> Iterator[Any]:
    import pyarrow as pa

    for lines in _read_lines(part, batch_rows):
        captions = []
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                unreadable.rows += 1
                continue
            if not isinstance(row, dict):
                unreadable.rows += 1
                continue
            value = row.get(column)
            captions.append(value if isinstance(value, str) else None)
        yield pa.array(captions, pa.string())


def _check_jsonl_column(file: CorpusFile, column: str) -> None:
    """The column must be in one of the first rows that parse (an empty file has nothing to check)."""
    keys: dict[str, None] = {}
    try:
        for lines in _read_lines(Part(file, 0), 100):
            first = next((line for line in lines if line.strip()), b"")
            if first.lstrip().startswith(b"["):
                raise PromptgenError(f"{file.shown} holds a JSON array, not one JSON object a line",
                                     "convert it, e.g. jq -c '.[]' FILE > FILE.jsonl")
            for line in lines:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    if column in row:
                        return
                    keys.update(dict.fromkeys(row))
            break
    except PromptgenError:
        raise
    except Exception as exc:
        raise CorpusError(f"{type(exc).__name__}: {exc}") from None
    if keys:
        raise PromptgenError(f"{file.shown} has no column {column!r}; its first rows have: "
                             f"{', '.join(map(repr, keys))}", "name the caption column with --column")


def _read_text(part: Part, column: str, batch_rows: int, unreadable: Unreadable) -> Iterator[Any]:
    import pyarrow as pa

    for lines in _read_lines(part, batch_rows):
        captions = []
        for line in lines:
            try:
                captions.append(line.decode("utf-8").rstrip("\r\n"))
            except UnicodeDecodeError:
                unreadable.rows += 1
        yield pa.array(captions, pa.string())

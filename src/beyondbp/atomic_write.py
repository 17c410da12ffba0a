"""Files written so that a kill, a full disk or a planted link never leaves half a file or writes elsewhere.

`stream_atomically(path, write)` hands `write` a temporary file that `tempfile.mkstemp` creates
exclusively (O_CREAT | O_EXCL, a random name: never an existing file, never through a link) in
the target's own folder, flushes it (and, when `durable`, fsyncs it and the folder), then renames
it over `path` (`os.replace` replaces a link planted at `path`; it never writes through it). On
any failure the temporary file is removed and `path` keeps its old content; a full disk or any
other OS error becomes one `FileWriteError` line naming the file. `previous=` keeps the file being
replaced under another name, moved only once the new one is complete (checkpoints keep one
generation back this way).

This is the only place in beyondbp that writes a whole file in place; `append_line` is the
only append (metrics.jsonl), with the same error line; `open_append` opens a log (train.log) the
same way. None of them writes through a link: a file that is a link, or (given `inside`, the study
or run folder) a folder below `inside` that is one, is refused in one line naming it
(`refuse_links`, `make_folder`), so a received folder's links never send a write out of it.
`write_files_atomically` writes a set of files (a report) all or none.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from .config import ConfigError

_UMASK = os.umask(0o022)  # read the process's umask once (mkstemp creates files 0600)
os.umask(_UMASK)


class FileWriteError(ConfigError):
    """A file could not be written (full disk, permissions, a planted link); its old content is kept."""


def os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind an exception (torch.save wraps a failed write in a RuntimeError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def write_error(path: Path, exc: OSError, kept: str = "its previous content is kept") -> FileWriteError:
    return FileWriteError(f"{path}: cannot write it ({exc.strerror or exc}); {kept}")


def link_refused(path: Path) -> FileWriteError:
    return FileWriteError(f"{path}: is a link; beyondbp never writes through a link in a folder it writes to "
                          f"(remove the link, or use another folder)")


def refuse_links(path: str | Path, inside: str | Path | None = None) -> None:
    """Refuse, in one line naming it, `path` when it is a link, or (given `inside`) any folder between
    `inside` and `path` that is one. `inside` itself is what the user typed and may be a link."""
    path = Path(path)
    chain = [path]
    if inside is not None and path.is_relative_to(inside):
        parts = path.relative_to(inside).parts
        chain = [Path(inside).joinpath(*parts[:k]) for k in range(1, len(parts) + 1)]
    for step in chain:
        if step.is_symlink():
            raise link_refused(step)


def special_refused(path: Path) -> FileWriteError:
    return FileWriteError(f"{path}: is not a regular file (a folder, FIFO, device or socket); beyondbp writes "
                          f"only regular files here (remove it, or use another folder)")


def refuse_special(path: str | Path) -> None:
    """Refuse, in one line naming it, `path` when it exists and is neither a regular file nor a link
    (links are `refuse_links`' to name): a FIFO would block the writer that opens it."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise special_refused(Path(path))


def make_folder(path: str | Path, inside: str | Path) -> Path:
    """Create `path` (and the folders up to it) below `inside`, refusing any link on the way."""
    path = Path(path)
    refuse_links(path, inside)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileWriteError(f"{path}: cannot create the folder ({exc.strerror or exc})") from None
    return path


def stream_atomically(path: str | Path, write: Callable[[BinaryIO], object], durable: bool = True,
                     previous: str | Path | None = None, suffix: str = ".tmp",
                     inside: str | Path | None = None) -> None:
    """Replace `path` by what write(f) writes to a binary file object, all or nothing; a `path`
    that is a link (or, given `inside`, lies below a linked folder) is refused. A `suffix`
    other than .tmp keeps the temporary file out of `remove_leftovers`' reach (another process's
    write in progress in the same folder)."""
    path = Path(path)
    refuse_links(path, inside)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # as open() would create it: run folders are shared
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
        if durable:
            _fsync_folder(path.parent)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        cause = os_error_in(exc)
        if cause is not None and not isinstance(exc, ConfigError):
            raise write_error(path, cause) from None
        raise


def atomic_write(path: str | Path, content: str | bytes, durable: bool = True,
                 inside: str | Path | None = None) -> None:
    """Replace `path` by `content` (text is written as UTF-8), all or nothing."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    stream_atomically(path, lambda f: f.write(data), durable=durable, inside=inside)


def write_files_atomically(folder: str | Path, files: dict[str, bytes], inside: str | Path | None = None) -> None:
    """Replace each FOLDER/NAME by its bytes, all or none: every new file is written in full (a
    temporary file each) before the first one is renamed into place, so a full disk or a refused
    link leaves every old file as it was. The error names the file being written."""
    folder, temporaries, current = Path(folder), {}, Path(folder)
    try:
        for name, data in files.items():
            current = folder / name
            refuse_links(current, inside)
            temporaries[name] = _write_temporary(current, data)
        for name, tmp in temporaries.items():
            current = folder / name
            os.replace(tmp, current)
        _fsync_folder(folder)
    except BaseException as exc:
        for tmp in temporaries.values():
            try:
                os.unlink(tmp)
            except OSError:  # already renamed into place
                pass
        cause = os_error_in(exc)
        if cause is not None and not isinstance(exc, ConfigError):
            raise write_error(current, cause) from None
        raise


def _write_temporary(path: Path, data: bytes) -> str:
    """A durable temporary file beside `path` holding `data`; its name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def open_append(path: str | Path) -> int:
    """A descriptor appending to `path` (a log), created if missing; a link there is refused, and
    so is a FIFO, device or socket (opened without blocking, so a FIFO never stalls the writer). A
    file with hard links is first made a copy of its own: the append never reaches its other names."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_refused(path) from None
        if exc.errno == errno.ENXIO:  # a FIFO without a reader, or a socket
            raise special_refused(path) from None
        raise write_error(path, exc, "the lines before this one are kept") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise special_refused(path)
    if info.st_nlink > 1:  # a hard link: the file has other names, maybe outside the folder
        os.close(fd)
        _own_copy(path)
        return open_append(path)
    os.set_blocking(fd, True)
    return fd


def _own_copy(path: Path) -> None:
    """Replace `path`, a file with other names (hard links), by a copy of its own, so that an append
    never reaches those other names (a received folder's log linked to a file outside it)."""
    try:
        src = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise write_error(path, exc, "the lines before this one are kept") from None
    with os.fdopen(src, "rb") as source:
        stream_atomically(path, lambda f: shutil.copyfileobj(source, f))


def append_line(path: str | Path, line: str) -> None:
    """Append one line to a log (metrics.jsonl); refuses a link planted at `path`."""
    path = Path(path)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = open_append(path)
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError as exc:
        raise write_error(path, exc, "the lines before this one are kept") from None
    finally:
        os.close(fd)


def remove_leftovers(folder: str | Path) -> list[str]:
    """Delete the temporary files a killed writer left in `folder` (`.NAME.<random>.tmp`, from mkstemp); call it
    only where one process writes (a run folder while its run trains). Links are unlinked, never
    followed."""
    gone = []
    for path in Path(folder).glob(".*.tmp"):
        if path.is_symlink() or path.is_file():
            path.unlink()
            gone.append(path.name)
    return gone


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (Linux); where folders cannot be opened, the rename stands as is."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

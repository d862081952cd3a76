"""Everything piro writes goes through here: whole or not at all, checked before the work, locked while written.

- `check_output_path` refuses, in one line, a path that cannot be written (under a file, in a folder without
  write permission, a folder where a file is wanted, an existing file without --overwrite), before any work.
- `AtomicFile` (and `write_bytes`, `write_text`, `write_json`, `atomic_torch_save` on it) writes a temporary
  file beside the target, `.NAME.tmp-PID`, fsyncs it, renames it over the target and fsyncs the folder, so a
  crash or power loss leaves the old file or the new one, never a part. Any failure removes the temporary
  file and leaves the old target intact; an OS error (a full disk included) becomes one PiroError line.
- `OutputLock` holds an exclusive lock on an output file (`.NAME.lock` beside it) or a run folder (`.lock`
  in it) while it is written; the lock file records the holder's PID, which a refusal names. Taking it also
  removes the temporary files that killed processes left behind.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import re
from pathlib import Path

from piro_cli.errors import PiroError

DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_TEMP_SUFFIX = re.compile(r"\.tmp-(\d+)$")
FREE_SPACE = "free space or pass --out elsewhere"


def temp_path(path: Path) -> Path:
    """Where `path` is written before it is renamed into place: hidden, beside it, tagged with this process's PID."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_error(path: Path, exc: OSError, advice: str = FREE_SPACE) -> PiroError:
    """An OSError met while writing `path`, as one line; `advice` says what to do when the disk is full."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno in DISK_FULL:
        return PiroError(f"disk full writing {path} ({reason}): {advice}")
    return PiroError(f"cannot write {path}: {reason}")


def check_output_path(path: str | Path, option: str = "--out", overwrite: bool = False, folder: bool = False) -> Path:
    """Refuse an output path that cannot be written, before any work: a PiroError naming `option`.

    `folder`: the path is a folder to write files into (it may exist); else a file, which may exist only with
    `overwrite`. Permission is judged with os.access, which lets root write anywhere.
    """
    path = Path(path)
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise PiroError(f"{option} {path}: {ancestor} is a file, not a folder; choose a path in a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PiroError(f"{option} {path}: no permission to write in {ancestor}; choose a folder you can write to")
    if folder:
        if path.exists() and not path.is_dir():
            raise PiroError(f"{option} {path}: is a file, not a folder; choose a folder")
        if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
            raise PiroError(f"{option} {path}: no permission to write in it; choose a folder you can write to")
        return path
    if path.is_dir():
        raise PiroError(f"{option} {path}: is a folder; name a file to write")
    if path.exists() and not overwrite:
        raise PiroError(f"{option} {path}: already exists; pass --overwrite to replace it, or choose another {option}")
    return path


class AtomicFile(io.RawIOBase):
    """A temporary file beside `path` that becomes `path` on `commit()`; `discard()` removes it.

    A seekable binary file for any writer (torch.save, h5py, savefig, np.savez). A failed write does not
    raise into the writer: the first OSError is kept, later writes are not tried, and `check()` or
    `commit()` raises it as one line. HDF5 in particular must never see a failed write: it then fails again
    while closing and freeing its objects, which crashed `piro prepare` on a full disk. A writer that reads
    back what it wrote (HDF5 does) needs `reads_back`: the writes that did not reach the disk are then kept
    in memory and read from there, as HDF5 crashes on reading its own metadata back as zeros. As a context
    manager it commits when the block ends normally and discards on an exception.
    """

    def __init__(self, path: str | Path, advice: str = FREE_SPACE, reads_back: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.temp_path = temp_path(self.path)
        self.advice = advice
        self.reads_back = reads_back
        self.error: OSError | None = None
        self._unwritten: list[tuple[int, bytes]] = []  # (offset, bytes) of failed writes, with `reads_back`
        self._position = 0
        self._fd = -1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.temp_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise write_error(self.path, exc, advice) from None

    # --- the file interface writers use
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self._position = offset
        elif whence == os.SEEK_CUR:
            self._position += offset
        else:
            self._position = self._size() + offset
        return self._position

    def _size(self) -> int:
        return max([os.fstat(self._fd).st_size] + [offset + len(chunk) for offset, chunk in self._unwritten])

    def readinto(self, buffer) -> int:
        start = self._position
        data = os.pread(self._fd, len(buffer), start)
        if self._unwritten:
            stop = min(start + len(buffer), self._size())
            block = bytearray(data.ljust(max(stop - start, 0), b"\0"))
            for offset, chunk in self._unwritten:  # in the order written: a later write wins
                low, high = max(offset, start), min(offset + len(chunk), stop)
                if low < high:
                    block[low - start : high - start] = chunk[low - offset : high - offset]
            data = bytes(block)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        if self.error is None:
            try:
                while done < len(view):
                    done += os.pwrite(self._fd, view[done:], self._position + done)
            except OSError as exc:
                self.error = exc
        if done < len(view) and self.reads_back:
            self._unwritten.append((self._position + done, bytes(view[done:])))
        self._position += len(view)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        size = self._position if size is None else size
        if self.error is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as exc:
                self.error = exc
        return size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        super().close()

    # --- finishing
    def check(self) -> None:
        """Raise the first failed write as one line (and remove the temporary file)."""
        if self.error is not None:
            error = self.error
            self.discard()
            raise write_error(self.path, error, self.advice) from None

    def commit(self) -> Path:
        """fsync the temporary file, rename it over `path`, fsync the folder: the new file is whole and durable."""
        try:
            self.check()
            try:
                os.fsync(self._fd)  # a delayed write error (a full disk on some file systems) shows here
                self.close()
                os.replace(self.temp_path, self.path)
            except OSError as exc:
                raise write_error(self.path, exc, self.advice) from None
        except BaseException:
            self.discard()
            raise
        fsync_folder(self.path.parent)
        remove_leftovers(self.path.parent)  # of processes killed while writing here, whatever they wrote
        return self.path

    def discard(self) -> None:
        """Remove the temporary file; the target is untouched."""
        self.temp_path.unlink(missing_ok=True)
        self.close()

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: some file systems cannot fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(data: bytes, path: str | Path, advice: str = FREE_SPACE) -> Path:
    with AtomicFile(path, advice) as file:
        file.write(data)
    return Path(path)


def write_text(text: str, path: str | Path, advice: str = FREE_SPACE) -> Path:
    return write_bytes(text.encode("utf-8"), path, advice)


def write_json(payload: dict, path: str | Path, advice: str = FREE_SPACE) -> Path:
    return write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", path, advice)


def atomic_torch_save(payload: dict, path: str | Path, advice: str = FREE_SPACE) -> Path:
    with AtomicFile(path, advice) as file:
        import torch  # only here: the rest of piro's outputs need no torch

        torch.save(payload, file)
    return Path(path)


# ----------------------------------------------------------------------------- locks and stale temporary files


class OutputLock:
    """An exclusive lock on an output file, or with `folder` a run folder, held from creation to `release()`.

    The lock file is `.NAME.lock` beside a file, `.lock` in a folder, and records the holder's PID; another
    process holding the lock makes creation raise a PiroError naming that PID. It is an flock, so a killed
    holder releases it. Once held, the temporary files of dead processes beside the output (in the folder)
    are removed. Use as a context manager, or keep it and call `release()`.
    """

    def __init__(self, target: str | Path, folder: bool = False) -> None:
        self.target = Path(target)
        self.path = self.target / ".lock" if folder else self.target.with_name(f".{self.target.name}.lock")
        if not folder:  # a folder to lock exists already; a file's folder may not yet
            try:
                self.target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise write_error(self.target, exc) from None
        self._fd = _acquire(self.path, self.target)
        remove_leftovers(self.target if folder else self.target.parent)

    def release(self) -> None:
        if self._fd >= 0:
            self.path.unlink(missing_ok=True)  # before unlocking: a process that opened this file re-checks it on locking
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _acquire(path: Path, target: Path) -> int:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise PiroError(f"{target}: cannot create the lock file {path} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f"piro (PID {holder})" if holder.isdigit() else "another piro process"
            raise PiroError(f"{target} is being written by {who}; wait for it or stop it") from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:  # still the file at `path`, not one its last holder removed
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # the lock holds without the PID; a refusal then says "another piro process"
    return fd


def remove_stale_temps(folder: Path, name: str | None = None) -> list[Path]:
    """Remove temporary files (`.NAME.tmp-PID`) in `folder` whose process is gone: of `name`, or of any file."""
    prefix = f".{name}.tmp-" if name is not None else "."
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_SUFFIX.search(entry.name)
        if not entry.name.startswith(prefix) or match is None or not entry.is_file():
            continue
        if name is not None and entry.name != f"{prefix}{match.group(1)}":
            continue
        if not _process_alive(int(match.group(1))):
            try:
                entry.unlink(missing_ok=True)
            except OSError:  # not ours to remove (another user's folder): left as it is
                continue
            removed.append(entry)
    return removed


def remove_leftovers(folder: Path) -> None:
    """What killed piro processes left in `folder`: their temporary files (remove_stale_temps) and their lock files
    (`.NAME.lock` holding the PID of a process that is gone, and held by none). Files of other programs, and of
    live processes, stay. (PIDs are this machine's: on a folder shared between machines, run one writer.)"""
    remove_stale_temps(folder)
    try:
        locks = [e for e in folder.iterdir() if e.name.startswith(".") and e.name.endswith(".lock") and len(e.name) > 6]
    except OSError:
        return
    for lock in locks:
        try:
            holder = lock.read_text(errors="replace").strip()
        except OSError:
            continue
        # only piro's own: a lock file holds its holder's PID and nothing else; a live holder's is left alone
        # without touching it (probing a lock another piro is taking could make it refuse falsely)
        if not holder.isdigit() or _process_alive(int(holder)):
            continue
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # held by nobody: remove it while holding it, as release() does (a process that opened it re-checks)
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                lock.unlink()
        except OSError:  # held by a live process (BlockingIOError), or not ours to remove
            pass
        finally:
            os.close(fd)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except (OverflowError, ValueError):
        return False
    return True

"""What reading one file's generation metadata may cost, and how every reader keeps to it.

The files under audit are written by the people being audited. Without limits a 62 KB PNG
holds a zTXt chunk that inflates to 60 MiB (kept verbatim, the catalog grows by as much),
and a 1.2 MB PNG holds twenty of them: 1.2 GB of text, more than SQLite stores in one
value, so the crawl cannot commit at all. Each file is read under one ``Reading``:

* text kept: at most ``MAX_PIECE_CHARS`` per piece and ``MAX_FILE_CHARS`` per file, in at
  most ``MAX_PIECES`` pieces; container readers decode no more bytes than could be kept;
* decompression: at most ``MAX_INFLATE_BYTES`` of output kept per file over all compressed
  pieces (zTXt, iTXt, stealth gzip), and ``MAX_MEASURE_BYTES`` more only counted (to say
  how large a cut piece was), in 1 MiB steps: a thousand small bombs cost what a few do;
* time: ``CPU_BUDGET_S`` of CPU per file, checked cooperatively in every loop that grows
  with the input (``tick``), and, when the reading runs on a process's main thread, by a
  one-shot profiling timer as a backstop for code without checks (Python 3.11's ``re``
  engine honours signals, so even a long regular-expression search stops);
* results: prompt fields, resources and ``extra`` are bounded (``bound_result``), and so
  is the list of problems (``bound_errors``).

What is cut off is said in the file's metadata errors, e.g. "png:zTXt:workflow truncated:
kept 1048576 of 62914560 characters". Parsers then read the kept text: a truncated JSON
graph simply fails to parse, and that is recorded too.

Outside ``extract()`` (a parser or container reader called on its own) no reading is active:
``current()`` hands out a fresh one with the same size limits and no time limit, and
``tick()`` does nothing.
"""

from __future__ import annotations

import math
import re
import signal
import threading
import time
import zlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from audit import safejson
from audit.meta.base import GenerationMetadata, MetadataText, Resource

MAX_PIECE_CHARS = 1 << 20  # characters kept of one piece of text (a PNG chunk, an EXIF tag, a sidecar)
MAX_FILE_CHARS = 4 << 20  # characters kept of all pieces of one file together
MAX_PIECES = 256  # pieces kept per file (a PNG may hold a hundred thousand tiny chunks)
MAX_BLOCKS = 32  # EXIF and XMP blocks walked per file (each may hold thousands of entries)
MAX_INFLATE_BYTES = 32 << 20  # decompressed output kept (then decoded) per file, over all compressed pieces
MAX_MEASURE_BYTES = 64 << 20  # decompressed output only counted per file, to say how large a cut piece was
MAX_DECODE_BYTES = 64 << 20  # bytes decoded into text per file: a text that decodes to nothing costs too
MAX_BYTES_PER_CHAR = 4  # UTF-8's widest: decoding room*4 bytes never shortens the kept text
MAX_LOCATION_CHARS = 200  # a tEXt keyword may be a megabyte long; locations and keys are names
MAX_NAME_CHARS = 1024  # sampler, model, hash, resource names
MAX_RESOURCES = 256
MAX_EXTRA_CHARS = 1 << 20  # ``extra`` as the catalog stores it (JSON), roughly
MAX_EXTRA_DEPTH = 64
MAX_ERRORS = 100
MAX_ERROR_CHARS = 300
CPU_BUDGET_S = 2.0  # CPU seconds to read one file's metadata
# The timer measures the whole process's CPU (other threads too), the cooperative checks this
# thread's: the timer is only the backstop, so it gets twice the budget.
_SIGNAL_FACTOR = 2.0
_STEP = 1 << 20  # decompression input and output per step: bounded memory, a deadline check between
_TICKS_PER_CHECK = 256  # reading the thread's CPU clock costs about a microsecond


class BudgetExceeded(BaseException):
    """The file's CPU budget is spent. A ``BaseException`` (like ``KeyboardInterrupt``) so
    that no ``except Exception`` in a parser swallows it: only ``extract()`` catches it."""


@dataclass
class Inflated:
    data: bytes  # the first ``limit`` bytes of the output
    size: int  # output bytes seen: all of them when ``complete``, else a lower bound
    complete: bool  # False when the file's decompression budget stopped the measuring
    error: str | None = None  # the stream is corrupt (after ``size`` bytes)


class Reading:
    """The budget of one file's metadata reading: text kept, decompression, CPU time."""

    def __init__(self, cpu_budget_s: float | None = CPU_BUDGET_S):
        """``cpu_budget_s=None``: no time limit (a reader used on its own; the other limits hold)."""
        self.cpu_budget_s = cpu_budget_s
        self.chars_left = MAX_FILE_CHARS
        self.pieces_left = MAX_PIECES
        self.blocks_left = MAX_BLOCKS
        self.inflate_left = MAX_INFLATE_BYTES
        self.measure_left = MAX_MEASURE_BYTES
        self.decode_left = MAX_DECODE_BYTES
        self.dropped = 0  # pieces not kept because a per-file limit was spent
        self.inflate_refused = 0  # compressed pieces not inflated: the decompression budget was spent
        self.json: dict[str, tuple[Any, str | None]] = {}  # each text is parsed once per file
        self._deadline = math.inf if cpu_budget_s is None else time.thread_time() + cpu_budget_s
        self._ticks = 0

    # --- time --------------------------------------------------------------------------
    def check(self) -> None:
        if time.thread_time() > self._deadline:
            raise BudgetExceeded

    def tick(self) -> None:
        self._ticks += 1
        if self._ticks % _TICKS_PER_CHECK == 0:
            self.check()

    # --- text kept ---------------------------------------------------------------------
    def room(self) -> int:
        """Characters the next piece may keep (0: the file's limits are spent)."""
        return min(MAX_PIECE_CHARS, self.chars_left) if self.pieces_left > 0 else 0

    def byte_room(self, bytes_per_char: int = MAX_BYTES_PER_CHAR) -> int:
        """Bytes worth decoding for the next piece: more could not be kept."""
        return self.room() * bytes_per_char

    def block(self) -> bool:
        """Whether one more EXIF or XMP block may be walked (counted when so)."""
        if self.blocks_left <= 0:
            self.dropped += 1
            return False
        self.blocks_left -= 1
        return True

    def spend(self, size: int) -> bool:
        """Whether ``size`` more bytes may be decoded into text (charged when so)."""
        if self.decode_left <= 0:
            self.dropped += 1
            return False
        self.decode_left -= size
        return True

    def piece(
        self,
        location: str,
        key: str,
        text: str,
        errors: list[str],
        *,
        whole: bool = True,
        size: int | None = None,
        unit: str = "characters",
        exact: bool = True,
    ) -> MetadataText | None:
        """``text`` as a piece, cut to what the limits leave, or None when they leave nothing.

        ``whole=False`` says ``text`` is a decoded prefix of something larger: ``size`` of it
        in ``unit`` ("characters", or "bytes" when the encoding is not one byte a character),
        ``exact=False`` when ``size`` is only a lower bound. Cuts are recorded in ``errors``."""
        location, key = clip_name(location, MAX_LOCATION_CHARS), clip_name(key, MAX_LOCATION_CHARS)
        room = self.room()
        if room == 0:
            self.dropped += 1
            return None
        kept = storable(text[:room])
        if not whole or len(kept) < len(text):
            if whole:
                size, unit, exact = len(text), "characters", True
            of = f"{'more than ' if not exact else ''}{size}"
            said = (
                f"{len(kept)} of {of} characters" if unit == "characters" else f"{len(kept)} characters of {of} {unit}"
            )
            why = "" if room == MAX_PIECE_CHARS else f" (the file's limit of {MAX_FILE_CHARS} characters)"
            errors.append(f"{location} truncated: kept {said}{why}")
        self.chars_left -= len(kept)
        self.pieces_left -= 1
        return MetadataText(location, key, kept)

    # --- decompression -----------------------------------------------------------------
    def inflate(self, payload: bytes, limit: int, wbits: int = zlib.MAX_WBITS) -> Inflated:
        """Decompress ``payload`` keeping its first ``limit`` bytes; the rest is only counted,
        while the file's budgets last (keeping and counting draw from separate ones, so one
        bomb's size is measured without starving the pieces after it). Memory stays within
        ``limit`` + 2 MiB."""
        if self.inflate_left <= 0:
            self.inflate_refused += 1
            return Inflated(b"", 0, False)
        inflater = zlib.decompressobj(wbits)
        view = memoryview(payload)
        kept: list[bytes] = []
        kept_len = size = pos = 0
        while not inflater.eof:
            self.check()
            if inflater.unconsumed_tail:
                chunk: Any = inflater.unconsumed_tail
            elif pos < len(view):
                chunk, pos = view[pos : pos + _STEP], pos + _STEP
            else:
                chunk = b""  # input used up: what zlib still holds comes out with empty input
            keeping = kept_len < limit
            allowance = min(_STEP, limit - kept_len, self.inflate_left) if keeping else min(_STEP, self.measure_left)
            if allowance <= 0:
                return Inflated(b"".join(kept), size, False)
            try:
                out = inflater.decompress(chunk, allowance)
            except zlib.error as exc:
                return Inflated(b"".join(kept), size, True, str(exc))
            if keeping:
                self.inflate_left -= len(out)
            else:
                self.measure_left -= len(out)
            size += len(out)
            if kept_len < limit and out:
                take = out[: limit - kept_len]
                kept.append(take)
                kept_len += len(take)
            if not out and not chunk:
                break  # a truncated stream: nothing more will come
        return Inflated(b"".join(kept), size, True)

    # --- notes -------------------------------------------------------------------------
    def summary(self) -> list[str]:
        notes = []
        if self.dropped:
            notes.append(
                f"{self.dropped} more metadata pieces not read: the file's limits ({MAX_PIECES} pieces, "
                f"{MAX_FILE_CHARS} characters kept, {MAX_DECODE_BYTES} bytes decoded, {MAX_BLOCKS} EXIF/XMP "
                f"blocks) are spent"
            )
        if self.inflate_refused:
            notes.append(
                f"{self.inflate_refused} compressed pieces not decompressed: the file's "
                f"{MAX_INFLATE_BYTES}-byte decompression budget is spent"
            )
        return notes


_ACTIVE: ContextVar[Reading | None] = ContextVar("audit_meta_reading", default=None)


def activate(reading: Reading):
    """Make ``reading`` the one every reader in this thread (and context) draws from."""
    return _ACTIVE.set(reading)


def deactivate(token) -> None:
    _ACTIVE.reset(token)


def current() -> Reading:
    """The reading in progress, or a fresh one without a time limit for a reader called
    outside ``extract()`` (``BudgetExceeded`` never reaches such a caller)."""
    return _ACTIVE.get() or Reading(cpu_budget_s=None)


def tick() -> None:
    """One step of work that grows with the input: stops the reading once its budget is spent."""
    reading = _ACTIVE.get()
    if reading is not None:
        reading.tick()


def check() -> None:
    reading = _ACTIVE.get()
    if reading is not None:
        reading.check()


def parse_json(text: str) -> tuple[Any, str | None]:
    """``(value, None)`` or ``(None, reason)`` for a JSON text, with bounded nesting
    (``audit.safejson``); never raises. Within one reading each text is parsed once: a dozen
    parsers ask for the same workflow. Values are shared: parsers must not change them."""
    reading = _ACTIVE.get()
    if reading is not None:
        cached = reading.json.get(text)
        if cached is not None:
            return cached
        reading.check()
    try:
        result: tuple[Any, str | None] = (safejson.loads(text), None)
    except safejson.TooDeep as exc:
        result = (None, str(exc))
    except (ValueError, RecursionError) as exc:
        result = (None, str(exc).split(":")[0])
    if reading is not None:
        reading.json[text] = result
    return result


def remember_json(text: str, value: Any) -> None:
    """``text`` is known to be the JSON of ``value`` (a piece made by serialising a value)."""
    reading = _ACTIVE.get()
    if reading is not None:
        reading.json[text] = (value, None)


# --- the timer backstop ------------------------------------------------------------------


class Alarm:
    """A one-shot CPU timer that raises ``BudgetExceeded`` in the main thread, used only when
    the main thread is free to take it: no other SIGPROF handler, no profiling timer running.
    Anywhere else (threads, embedded interpreters, profilers) the cooperative checks alone apply."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.armed = False
        self._previous: Any = None
        self._installed = False

    def _fire(self, _signum, _frame) -> None:
        if self.armed:  # fires once; a late signal after disarm() is ignored
            self.armed = False
            raise BudgetExceeded

    def arm(self) -> None:
        if self.seconds <= 0 or not _timer_available():
            return
        self._previous = signal.signal(signal.SIGPROF, self._fire)
        self._installed = True
        self.armed = True
        signal.setitimer(signal.ITIMER_PROF, self.seconds)

    def disarm(self) -> None:
        """Idempotent; the timer stops before the handler goes (SIGPROF's default kills)."""
        self.armed = False
        if self._installed:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False


def _timer_available() -> bool:
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        return False
    try:
        return signal.getsignal(signal.SIGPROF) == signal.SIG_DFL and signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)
    except (ValueError, OSError):  # pragma: no cover - an interpreter without signals
        return False


def alarm_for(reading: Reading) -> Alarm:
    return Alarm(reading.cpu_budget_s * _SIGNAL_FACTOR if reading.cpu_budget_s is not None else 0.0)


# --- bounded results ---------------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` as SQLite can store it: JSON's ``"\\ud800"`` (and YAML's) decode to a lone
    surrogate, which no UTF-8 encoder takes; each becomes U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def clip_name(text: Any, limit: int = MAX_NAME_CHARS) -> str:
    text = storable(str(text))
    return text if len(text) <= limit else text[:limit] + "…"


def bounded_join(parts, separator: str, limit: int) -> str:
    """``separator.join(parts)`` cut at ``limit`` characters, without building more than that."""
    out: list[str] = []
    length = 0
    for part in parts:
        tick()
        if out:
            out.append(separator)
            length += len(separator)
        if length + len(part) >= limit:
            out.append(part[: max(0, limit - length)])
            break
        out.append(part)
        length += len(part)
    return "".join(out)[:limit]


def bounded_copy(value: Any, max_chars: int = MAX_EXTRA_CHARS, max_depth: int = MAX_EXTRA_DEPTH) -> tuple[Any, bool]:
    """A copy of ``value`` that JSON can store in about ``max_chars`` characters at most:
    strings and containers cut where the budget ends, deeper levels than ``max_depth``
    replaced by a note, non-finite floats and unknown types as text. (copy, was anything cut)."""
    budget = [max_chars]
    cut = [False]

    def copy(item: Any, depth: int) -> Any:
        tick()
        if budget[0] <= 0:
            cut[0] = True
            return None
        if item is None or isinstance(item, bool):
            budget[0] -= 5
            return item
        if isinstance(item, int):
            budget[0] -= 20
            return item
        if isinstance(item, float):
            budget[0] -= 24
            return item if math.isfinite(item) else str(item)
        if isinstance(item, str):
            if len(item) + 2 > budget[0]:
                cut[0] = True
                item = item[: max(0, budget[0] - 2)]
            budget[0] -= len(item) + 2
            return storable(item)
        if depth >= max_depth:
            cut[0] = True
            budget[0] -= 24
            return "(nested too deep)"
        if isinstance(item, dict):
            budget[0] -= 2
            out = {}
            for key, child in item.items():
                if budget[0] <= 0:
                    cut[0] = True
                    break
                name = key if isinstance(key, str) else str(key)  # as json.dumps writes keys
                name = clip_name(name, MAX_NAME_CHARS)
                budget[0] -= len(name) + 4
                out[name] = copy(child, depth + 1)
            return out
        if isinstance(item, (list, tuple, set, frozenset)):
            budget[0] -= 2
            out_list = []
            for child in item:
                if budget[0] <= 0:
                    cut[0] = True
                    break
                budget[0] -= 1
                out_list.append(copy(child, depth + 1))
            return out_list
        if isinstance(item, Resource):
            return copy(item.to_dict(), depth)
        return copy(str(item), depth)

    return copy(value, 0), cut[0]


def bound_result(meta: GenerationMetadata, errors: list[str]) -> GenerationMetadata:
    """``meta`` with every field within the catalog's limits (in place); cuts are recorded."""
    label = meta.source or meta.generator or "metadata"
    for name, limit in (
        ("prompt", MAX_PIECE_CHARS),
        ("negative_prompt", MAX_PIECE_CHARS),
        ("seed", 64),
        ("sampler", MAX_NAME_CHARS),
        ("scheduler", MAX_NAME_CHARS),
        ("model", MAX_NAME_CHARS),
        ("model_hash", MAX_NAME_CHARS),
        ("generator", 64),
        ("source", MAX_LOCATION_CHARS),
    ):
        value = getattr(meta, name)
        if value is not None:
            value = storable(value if isinstance(value, str) else str(value))
            setattr(meta, name, value)
        if value is not None and len(value) > limit:
            setattr(meta, name, value[:limit])
            errors.append(f"{label}: {name} cut to {limit} of {len(value)} characters")
    if meta.steps is not None and not (isinstance(meta.steps, int) and -(1 << 63) <= meta.steps < (1 << 63)):
        meta.steps = None
    if meta.cfg_scale is not None and not (isinstance(meta.cfg_scale, (int, float)) and math.isfinite(meta.cfg_scale)):
        meta.cfg_scale = None
    if len(meta.resources) > MAX_RESOURCES:
        errors.append(f"{label}: {len(meta.resources)} resources, kept the first {MAX_RESOURCES}")
        meta.resources = meta.resources[:MAX_RESOURCES]
    for resource in meta.resources:
        resource.kind = clip_name(resource.kind, 64)
        resource.name = clip_name(resource.name)
        resource.hash = clip_name(resource.hash) if resource.hash is not None else None
        if resource.weight is not None and not (
            isinstance(resource.weight, (int, float)) and math.isfinite(resource.weight)
        ):
            resource.weight = None
    if meta.extra:
        extra_errors = meta.extra.get("errors")
        extra, cut = bounded_copy(meta.extra)
        if cut:
            errors.append(f"{label}: further details cut to about {MAX_EXTRA_CHARS} characters")
        if isinstance(extra_errors, list):
            extra["errors"] = bound_errors([str(e) for e in extra_errors])
        meta.extra = extra
    return meta


def bound_errors(errors: list[str]) -> list[str]:
    """Each problem once, on one line of at most ``MAX_ERROR_CHARS``, at most ``MAX_ERRORS`` of them."""
    kept: dict[str, None] = {}
    more = 0
    for error in errors:
        line = storable(" ".join(str(error).split()))
        line = line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"
        if line in kept:
            continue
        if len(kept) < MAX_ERRORS - 1:
            kept[line] = None
        else:
            more += 1
    return list(kept) + ([f"... and {more} more metadata problems"] if more else [])

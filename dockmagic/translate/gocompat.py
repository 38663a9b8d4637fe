"""Go-compatible primitives (strconv, encoding/csv, path, net.ParseIP, strings).

The CLI is written in Go; these reproduce its parsing rules exactly so every flag value means
what it means to ``docker run``.
"""
from __future__ import annotations

import ipaddress
import math
import re
import unicodedata
from fractions import Fraction
from typing import List, Optional, Tuple

from .errors import TranslateError


INT64_MAX = 2 ** 63 - 1
INT64_MIN = -(2 ** 63)


_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def _go_bool(text: str, what: str) -> bool:
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise TranslateError(f"{what}: {text!r} is not a boolean (use true or false)")


def _underscore_ok(s: str) -> bool:
    """Go strconv's rule: underscores only between digits (a base prefix counts as a digit)."""
    saw = "^"
    i = 0
    if s[:1] in ("+", "-"):
        s = s[1:]
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i, saw, hexa = 2, "0", s[1].lower() == "x"
    while i < len(s):
        c = s[i]
        if "0" <= c <= "9" or (hexa and "a" <= c.lower() <= "f"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


_DIGITS = {2: "01", 8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}


def _go_parse_int(text: str, base: int = 0, bits: int = 64) -> int:
    """strconv.ParseInt(text, base, bits); ValueError on bad syntax or range."""
    s = text
    if not s:
        raise ValueError("invalid syntax")
    neg = s[0] == "-"
    if s[0] in "+-":
        s = s[1:]
        if not s:
            raise ValueError("invalid syntax")
    base0 = base == 0
    if base0:
        base = 10
        if s[0] == "0":
            if len(s) >= 3 and s[1].lower() == "b":
                base, s = 2, s[2:]
            elif len(s) >= 3 and s[1].lower() == "o":
                base, s = 8, s[2:]
            elif len(s) >= 3 and s[1].lower() == "x":
                base, s = 16, s[2:]
            else:
                base, s = 8, s[1:]
    digits = []
    underscores = False
    for c in s:
        if c == "_" and base0:
            underscores = True
            continue
        if c not in _DIGITS[base]:
            raise ValueError("invalid syntax")
        digits.append(c)
    if underscores and not _underscore_ok(text):
        raise ValueError("invalid syntax")
    value = int("".join(digits), base) if digits else 0
    if neg:
        value = -value
    if not -(2 ** (bits - 1)) <= value <= 2 ** (bits - 1) - 1:
        raise ValueError("value out of range")
    return value


def _go_atoi(text: str) -> int:
    """strconv.Atoi: optional sign, decimal digits only."""
    if not re.fullmatch(r"[+-]?[0-9]+", text, re.ASCII):
        raise ValueError("invalid syntax")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("value out of range")
    return value


_DEC_FLOAT = re.compile(r"[+-]?(?:[0-9_]+(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][+-]?[0-9_]+)?", re.ASCII)
_HEX_FLOAT = re.compile(r"[+-]?0[xX](?:[0-9a-fA-F_]+(?:\.[0-9a-fA-F_]*)?|\.[0-9a-fA-F_]+)"
                        r"[pP][+-]?[0-9_]+", re.ASCII)


def _go_float_text(text: str) -> Tuple[str, bool]:
    """Check strconv.ParseFloat's syntax; returns (text without underscores, is_hex)."""
    if _DEC_FLOAT.fullmatch(text):
        hexa = False
    elif _HEX_FLOAT.fullmatch(text):
        hexa = True
    else:
        raise ValueError("invalid syntax")
    if "_" in text and not _underscore_ok(text):
        raise ValueError("invalid syntax")
    return text.replace("_", ""), hexa


def _go_parse_float(text: str) -> float:
    """strconv.ParseFloat(text, 64): same syntax, same (correctly rounded) value."""
    clean, hexa = _go_float_text(text)
    try:
        value = float.fromhex(clean) if hexa else float(clean)
    except OverflowError:
        raise ValueError("value out of range") from None
    if math.isinf(value):
        raise ValueError("value out of range")
    return value


def _go_parse_rat(text: str) -> Fraction:
    """The decimal / hex-float forms of big.Rat.SetString, exactly."""
    clean, hexa = _go_float_text(text)
    if not hexa:
        mant, _, exp = clean.lower().partition("e")
        if exp and abs(int(exp)) > 4000:
            raise ValueError("value out of range")
        return Fraction(clean)
    sign = -1 if clean[0] == "-" else 1
    body = clean.lstrip("+-")[2:]
    mant, _, exp = re.split(r"([pP])", body, maxsplit=1)
    whole, _, frac = mant.partition(".")
    value = Fraction(int(whole or "0", 16)) + (Fraction(int(frac, 16), 16 ** len(frac))
                                               if frac else 0)
    e = int(exp)
    if abs(e) > 5000:
        raise ValueError("value out of range")
    return sign * value * Fraction(2) ** e


def _csv_record(text: str, what: str) -> List[Tuple[str, bool]]:
    """Go ``encoding/csv`` ``Reader.Read`` of ONE record: [(field, was_quoted)]. A second record
    (text after a newline) is refused instead of being ignored as the CLI does."""
    raw = text.split("\n")
    lines = [x + "\n" for x in raw[:-1]] + ([raw[-1]] if raw[-1] else [])
    pos = 0

    def read_line() -> Optional[str]:
        nonlocal pos
        if pos >= len(lines):
            return None
        line = lines[pos]
        pos += 1
        if not line.endswith("\n"):
            if line.endswith("\r"):
                line = line[:-1]
        elif line.endswith("\r\n"):
            line = line[:-2] + "\n"
        return line

    line = read_line()
    while line == "\n":
        line = read_line()
    if line is None:
        raise TranslateError(f"{what}: the value is empty")
    fields: List[Tuple[str, bool]] = []
    while True:
        if not line.startswith('"'):
            i = line.find(",")
            fld = line[:i] if i >= 0 else (line[:-1] if line.endswith("\n") else line)
            if '"' in fld:
                raise TranslateError(f'{what}: a " inside an unquoted field ({fld!r}); quote the '
                                     f'whole field: "key=a,b"')
            fields.append((fld, False))
            if i >= 0:
                line = line[i + 1:]
                continue
            break
        buf: List[str] = []
        line = line[1:]
        done = False
        while True:
            i = line.find('"')
            if i >= 0:
                buf.append(line[:i])
                line = line[i + 1:]
                if line.startswith('"'):
                    buf.append('"')
                    line = line[1:]
                elif line.startswith(","):
                    line = line[1:]
                    break
                elif line in ("", "\n"):
                    done = True
                    break
                else:
                    raise TranslateError(f'{what}: extraneous or missing " in a quoted field')
            elif line:
                buf.append(line)
                nxt = read_line()
                line = "" if nxt is None else nxt
            else:
                raise TranslateError(f'{what}: a quoted field is not closed (missing ")')
        fields.append(("".join(buf), True))
        if done:
            break
    if any(x.strip("\r\n") for x in lines[pos:]):
        raise TranslateError(f"{what}: the value holds a newline; give one value per flag")
    return fields


def _csv_join(fields) -> str:
    """Write fields as one CSV record that Go's reader reads back unchanged."""
    out = []
    for f in fields:
        if any(c in f for c in ',"\r\n') or f == "":
            f = '"' + f.replace('"', '""') + '"'
        out.append(f)
    return ",".join(out)


def _clean(p: str) -> str:
    """Go ``path.Clean``."""
    if p == "":
        return "."
    rooted = p.startswith("/")
    parts: List[str] = []
    for comp in p.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(comp)
    out = "/".join(parts)
    return "/" + out if rooted else (out or ".")


def _abs(p: str, cwd: str) -> str:
    """Go ``filepath.Abs`` against ``cwd``."""
    return _clean(p) if p.startswith("/") else _clean(cwd + "/" + p)


def _is_ip(text: str) -> bool:
    """Go ``net.ParseIP``: dotted-quad IPv4 without leading zeros, or IPv6 without a zone."""
    if not text or not re.fullmatch(r"[0-9A-Fa-f:.]+", text, re.ASCII):
        return False
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _go_lstrip_space(s: str) -> str:
    i = 0
    while i < len(s) and (s[i] in "\t\n\v\f\r \x85\xa0" or (
            s[i] > "\xff" and unicodedata.category(s[i]) in ("Zs", "Zl", "Zp"))):
        i += 1
    return s[i:]


def _go_upper(s: str) -> str:
    """Go ``strings.ToUpper`` (simple case mapping: one rune to one rune)."""
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in s)

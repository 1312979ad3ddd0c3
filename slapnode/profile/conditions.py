"""Conditional section headers: ``[name:expression]``, as zc.buildout reads them.

Owns the names an expression may use (those buildout provides: ``sys``, ``os``,
``platform``, ``re``, ``python2``/``python3``/``pythonXY``, ``cpython``/``pypy``…,
``linux``/``macosx``/``windows``/``cygwin``/``solaris``/``posix``,
``bits32``/``bits64``, ``little_endian``/``big_endian``), and a restricted
evaluator: the expression is parsed with ``ast`` and walked by hand; only
constants, lists and tuples, those names, a fixed list of their attributes and
calls (``os.path.isdir``, ``platform.freedesktop_os_release()``, ``int``,
``str.split`` …), subscripts, one-loop list comprehensions, ``and``/``or``/``not``
and comparisons are allowed; ``open`` reads only /proc and /sys (machine facts). Nothing is ever passed to
``eval``. The answer is about the interpreter and machine slapnode runs on, as
buildout's is about its own.
"""

import ast
import functools
import operator
import os
import platform
import re
import struct
import sys


class ConditionError(ValueError):
    """An expression outside the subset, or one that fails; the message says which part."""


DOTTED = {
    "sys.version_info", "sys.platform", "sys.byteorder", "sys.maxsize", "sys.version",
    "sys.implementation", "os.name", "os.sep", "os.path", "os.path.isdir", "os.path.isfile",
    "os.path.exists", "os.access", "os.R_OK", "os.W_OK", "os.X_OK", "os.F_OK",
    "platform.machine", "platform.system", "platform.release", "platform.python_version",
    "platform.python_version_tuple", "platform.python_implementation",
    "platform.architecture", "platform.processor", "platform.freedesktop_os_release",
    "re.match", "re.search", "re.fullmatch",
}
CALLABLE = {"machine", "system", "release", "python_version", "python_version_tuple",
            "python_implementation", "architecture", "processor", "freedesktop_os_release",
            "match", "search", "fullmatch", "isdir", "isfile", "exists", "access",
            "startswith", "endswith", "lower", "upper", "split", "strip", "read", "get",
            "int", "str", "len", "open"}
FACTS = ("/proc/", "/sys/")     # the files a condition may read: the machine's own facts


class _Facts:
    """What ``open(path)`` gives a condition: the text of a /proc or /sys file."""

    def __init__(self, path):
        real = os.path.realpath(path)
        if not real.startswith(FACTS):
            raise ConditionError(f"a section condition may read only /proc and /sys, not {path!r}")
        self.path = real

    def read(self):
        with open(self.path, errors="replace") as stream:
            return stream.read(1 << 16)
COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
           ast.NotIn: lambda a, b: a not in b, ast.Is: operator.is_, ast.IsNot: operator.is_not}


@functools.lru_cache(maxsize=1)
def names():
    """The names buildout gives section expressions, for this interpreter and machine."""
    major, minor = platform.python_version_tuple()[:2]
    found = {"sys": sys, "os": os, "platform": platform, "re": re,
             "python2": major == "2", "python3": major == "3"}
    for version in ("24", "25", "26", "27", "30", "31", "32", "33", "34", "35", "36", "37",
                    "38", "39", "310", "311", "312", "313", "314", "315", "316", "317",
                    "318", "319"):
        found["python" + version] = major + minor == version
    version = sys.version.lower()
    pypy, jython, iron = "pypy" in version, "java" in version, "iron" in version
    found.update(cpython=not (pypy or jython or iron), pypy=pypy, jython=jython,
                 ironpython=iron)
    system = sys.platform.lower()
    found.update(linux="linux" in system, windows="win32" in system, cygwin="cygwin" in system,
                 solaris="sunos" in system, macosx="darwin" in system,
                 posix="posix" in os.name.lower())
    found.update(int=int, str=str, len=len, open=_Facts)
    bits = struct.calcsize("P") * 8
    found.update(bits32=bits == 32, bits64=bits == 64, little_endian=sys.byteorder == "little",
                 big_endian=sys.byteorder == "big")
    return found


def evaluate(expression):
    """The truth of a section header's expression. Raises ConditionError."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ConditionError(f"the condition {expression.strip()!r} is not an expression") from None
    try:
        return bool(_value(tree.body, names()))
    except ConditionError:
        raise
    except Exception as exc:        # a comparison of unlike types, a bad regex …
        raise ConditionError(f"the condition {expression.strip()!r} fails: "
                             f"{type(exc).__name__}: {exc}") from None


def _dotted(node):
    """``a.b.c`` of a chain of attributes on a name, or None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id] + parts[::-1])
    return None


def _value(node, known):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in known:
            raise ConditionError(f"unknown name {node.id!r} in a section condition "
                                 f"(known: python3, linux, sys, platform, …)")
        return known[node.id]
    if isinstance(node, ast.Attribute):
        dotted = _dotted(node)
        if dotted in DOTTED:
            owner = known[dotted.split(".")[0]]
            for part in dotted.split(".")[1:]:
                owner = getattr(owner, part)
            return owner
        if node.attr in CALLABLE or node.attr in ("major", "minor", "micro", "name"):
            owner = _value(node.value, known)
            if isinstance(owner, (str, tuple, dict, _Facts)) or type(owner).__name__ in (
                    "version_info", "SimpleNamespace"):
                return getattr(owner, node.attr)
        raise ConditionError(f"attribute {node.attr!r} is not allowed in a section condition")
    if isinstance(node, ast.Call):
        if node.keywords or not (
                isinstance(node.func, ast.Attribute) and node.func.attr in CALLABLE
                or isinstance(node.func, ast.Name) and node.func.id in ("int", "str", "len", "open")):
            raise ConditionError("only calls such as platform.machine() or "
                                 "re.match(...) are allowed in a section condition")
        function = _value(node.func, known)
        return function(*[_value(arg, known) for arg in node.args])
    if isinstance(node, ast.ListComp) and len(node.generators) == 1 and \
            isinstance(node.generators[0].target, ast.Name) and not node.generators[0].is_async:
        loop = node.generators[0]
        found = []
        for item in list(_value(loop.iter, known))[:1000]:
            scope = {**known, loop.target.id: item}
            if all(_value(test, scope) for test in loop.ifs):
                found.append(_value(node.elt, scope))
        return found
    if isinstance(node, ast.List):
        return [_value(e, known) for e in node.elts]
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_value(v, known) for v in node.values)
        return any(_value(v, known) for v in node.values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _value(node.operand, known)
    if isinstance(node, ast.Compare):
        left = _value(node.left, known)
        for op, right_node in zip(node.ops, node.comparators):
            right = _value(right_node, known)
            if not COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Tuple):
        return tuple(_value(e, known) for e in node.elts)
    if isinstance(node, ast.Subscript):
        index = node.slice
        if isinstance(index, ast.Slice):
            parts = [None if p is None else _value(p, known) for p in (index.lower, index.upper)]
            return _value(node.value, known)[slice(*parts)]
        return _value(node.value, known)[_value(index, known)]
    raise ConditionError(f"{type(node).__name__} is not allowed in a section condition")

"""Parser of the cell language: Python-syntax equations read with `ast`, never evaluated.

    # comments are allowed
    f = sigmoid(W(x) + W(h, bias=1))
    c_new = c * f + i * j
    h_new = tanh(c_new) * o

One assignment per line; the right-hand side uses the sources `x`, `h`, `c`, names assigned on
earlier lines, the constant `1`, the ops `W(a, bias=b0)`, `tanh`, `sigmoid`, `relu`, `leaky_relu`, `identity`,
and the binary operators `+`, `-`, `*`. Anything else is a `CellSyntaxError`; a well-formed text that
does not make a usable cell is a `CellValidationError`. Both carry a one-line message with the line.
"""

from __future__ import annotations

import ast
import math

from cells.graph import (
    BIAS_LIMIT,
    BINARY,
    CONST,
    LINEAR,
    OPS,
    SINKS,
    SOURCES,
    UNARY,
    CellSyntaxError,
    CellValidationError,
    Graph,
    Node,
    ancestors,
)

_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul"}
_OPERATOR_TEXT = {
    ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**", ast.MatMult: "@",
    ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^",
}  # fmt: skip
_STATEMENT_TEXT = {
    ast.Import: "import statement", ast.ImportFrom: "import statement",
    ast.FunctionDef: "function definition", ast.AsyncFunctionDef: "function definition",
    ast.ClassDef: "class definition", ast.AugAssign: "augmented assignment (+=, -=, ...)",
    ast.AnnAssign: "annotated assignment", ast.Expr: "expression without assignment",
    ast.If: "if statement", ast.For: "for loop", ast.While: "while loop", ast.Return: "return",
    ast.Delete: "del statement", ast.With: "with statement", ast.Global: "global statement",
}  # fmt: skip
_EXPRESSION_TEXT = {
    ast.Lambda: "lambda", ast.Attribute: "attribute access", ast.Subscript: "subscript",
    ast.Compare: "comparison", ast.BoolOp: "boolean operator", ast.IfExp: "conditional expression",
    ast.List: "list", ast.Tuple: "tuple", ast.Dict: "dict", ast.Set: "set",
    ast.ListComp: "comprehension", ast.GeneratorExp: "comprehension", ast.Starred: "starred value",
    ast.JoinedStr: "f-string", ast.NamedExpr: "walrus assignment", ast.Await: "await",
}  # fmt: skip


def parse(text: str, source: str | None = None) -> Graph:
    """Parses cell text into a validated canonical `Graph`.

    Args:
      text: the equations.
      source: a file name or cell name to put in front of error messages.

    Returns:
      The cell's `Graph`.

    Raises:
      CellSyntaxError: the text is not in the cell language.
      CellValidationError: the text does not describe a usable cell.
    """
    try:
        return _Parser(source).run(text)
    except (RecursionError, MemoryError):
        raise CellSyntaxError("the cell is nested too deeply to parse", None, source) from None


class _Parser:
    def __init__(self, source: str | None):
        self.source = source
        self.nodes: list[Node] = []
        self.names: dict[str, int] = {}  # assigned name -> node index
        self.lines: dict[str, int] = {}  # assigned name -> line
        self.first_read: dict[str, int] = {}  # source -> first line that reads it
        self.line = 0
        self.shared: dict[str, int] = {}  # sources and the constant: one node each
        self.later: dict[str, int] = {}  # names assigned somewhere, for "used before assigned"

    def snippet(self, node: ast.AST) -> str:
        """The text of `node` as the user wrote it."""
        return ast.get_source_segment(self.text, node) or ast.unparse(node)

    def syntax(self, message: str) -> CellSyntaxError:
        return CellSyntaxError(message, self.line or None, self.source)

    def invalid(self, message: str, line: int | None = None) -> CellValidationError:
        return CellValidationError(message, line if line is not None else self.line or None, self.source)

    def run(self, text: str) -> Graph:
        self.text = text
        try:
            module = ast.parse(text, mode="exec")
        except SyntaxError as error:
            token = (error.text or "").strip()
            if len(token) > 40:
                token = token[:37] + "..."
            self.line = error.lineno or 0
            detail = f" near '{token}'" if token else ""
            raise self.syntax(f"invalid syntax{detail} ({error.msg})") from None
        for statement in module.body:
            if isinstance(statement, ast.Assign):
                for target in statement.targets:
                    if isinstance(target, ast.Name):
                        self.later.setdefault(target.id, statement.lineno)
        for statement in module.body:
            self.line = statement.lineno
            self.statement(statement)
        self.line = 0
        if "h_new" not in self.names:
            raise self.invalid("missing 'h_new': a cell must assign h_new", line=None)
        sinks = [self.names[name] for name in SINKS if name in self.names]
        used = set(sinks)
        for index in sorted(sinks, reverse=True):
            used |= ancestors(self.nodes, index)
        for name, index in sorted(self.names.items(), key=lambda item: self.lines[item[0]]):
            if index not in used:
                raise self.invalid(f"'{name}' is assigned but never used", self.lines[name])
        try:
            return Graph.build(self.nodes, self.names["h_new"], self.names.get("c_new"))
        except CellValidationError as error:
            line = self.lines.get(error.subject) or self.first_read.get(error.subject)
            raise self.invalid(error.message, line) from None

    def statement(self, statement: ast.stmt) -> None:
        if not isinstance(statement, ast.Assign):
            kind = _STATEMENT_TEXT.get(type(statement), type(statement).__name__)
            raise self.syntax(f"{kind} is not allowed: write 'name = expression'")
        if len(statement.targets) != 1:
            raise self.syntax("chained assignment 'a = b = ...' is not allowed")
        target = statement.targets[0]
        if not isinstance(target, ast.Name):
            raise self.syntax(
                f"cannot assign to '{self.snippet(target)}': the left side must be a plain name"
            )
        name = target.id
        if name in SOURCES:
            raise self.invalid(f"cannot assign to the input '{name}'")
        if name in OPS:
            raise self.invalid(f"cannot assign to '{name}': it is the name of an op")
        if name in self.names:
            raise self.invalid(f"'{name}' is assigned twice (first on line {self.lines[name]})")
        value = statement.value
        if isinstance(value, ast.Name):
            raise self.invalid(
                f"'{name} = {value.id}' only renames a value: an assignment must apply an op"
            )
        if isinstance(value, ast.Constant):
            raise self.invalid(f"'{name} = {self.snippet(value)}' assigns a constant")
        index = self.expression(value)
        self.nodes[index] = Node(
            self.nodes[index].op, self.nodes[index].inputs, self.nodes[index].bias, name
        )
        self.names[name] = index
        self.lines[name] = self.line

    def add(self, node: Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def expression(self, node: ast.expr) -> int:
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.BinOp):
            op = _BINOPS.get(type(node.op))
            if op is None:
                symbol = _OPERATOR_TEXT.get(type(node.op), type(node.op).__name__)
                raise self.syntax(f"operator '{symbol}' is not allowed (use +, -, *)")
            left = self.expression(node.left)
            right = self.expression(node.right)
            return self.add(Node(op, (left, right)))
        if isinstance(node, ast.UnaryOp):
            symbol = {ast.USub: "-", ast.UAdd: "+", ast.Not: "not", ast.Invert: "~"}[type(node.op)]
            raise self.syntax(
                f"unary '{symbol}' in '{self.snippet(node)}' is not allowed "
                "(only binary +, -, *; write 1 - a for a complement)"
            )
        if isinstance(node, ast.Call):
            return self.call(node)
        kind = _EXPRESSION_TEXT.get(type(node), type(node).__name__)
        raise self.syntax(f"{kind} '{self.snippet(node)}' is not part of the cell language")

    def name(self, name: str) -> int:
        if name in SOURCES:
            self.first_read.setdefault(name, self.line)
            if name not in self.shared:
                self.shared[name] = self.add(Node(name, name=name))
            return self.shared[name]
        if name in self.names:
            return self.names[name]
        if name in OPS:
            raise self.syntax(f"'{name}' is an op: call it as {name}(...)")
        if name in self.later:
            raise self.invalid(
                f"'{name}' is used before it is assigned (on line {self.later[name]})"
            )
        raise self.invalid(f"undefined name '{name}'")

    def constant(self, node: ast.Constant) -> int:
        value = node.value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 1:
            if CONST not in self.shared:
                self.shared[CONST] = self.add(Node(CONST))
            return self.shared[CONST]
        if isinstance(value, (int, float, complex)) and not isinstance(value, bool):
            raise self.syntax(
                f"constant {value!r} is not allowed: 1 is the only constant (use bias= for offsets)"
            )
        raise self.syntax(f"constant {self.snippet(node)} is not part of the cell language")

    def call(self, node: ast.Call) -> int:
        func = node.func
        if not isinstance(func, ast.Name):
            kind = _EXPRESSION_TEXT.get(type(func), type(func).__name__)
            raise self.syntax(
                f"{kind} '{self.snippet(func)}' is not allowed: ops are {', '.join(OPS)}"
            )
        op = func.id
        if op not in OPS:
            raise self.syntax(f"unknown op '{op}' (ops: {', '.join(OPS)})")
        if any(isinstance(arg, ast.Starred) for arg in node.args):
            raise self.syntax(f"{op}(*...) is not allowed")
        if len(node.args) != 1:
            raise self.syntax(f"{op} takes 1 argument, got {len(node.args)}")
        bias = 0.0
        for keyword in node.keywords:
            if op != LINEAR:
                raise self.syntax(f"{op} takes no keyword arguments, got '{keyword.arg or '**'}='")
            if keyword.arg != "bias":
                raise self.syntax(f"W got an unknown keyword '{keyword.arg or '**'}' (only bias=)")
            bias = self.bias(keyword.value)
        operand = self.expression(node.args[0])
        if op == LINEAR:
            return self.add(Node(LINEAR, (operand,), bias))
        assert op in UNARY
        return self.add(Node(op, (operand,)))

    def bias(self, node: ast.expr) -> float:
        sign = 1.0
        whole = node  # its source text is only looked up for an error: that lookup is slow
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
            node = node.operand
        value = node.value if isinstance(node, ast.Constant) else None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.syntax(f"bias= must be a number, got '{self.snippet(whole)}'")
        value = sign * float(value)
        if not math.isfinite(value) or abs(value) > BIAS_LIMIT:
            raise self.invalid(f"bias={self.snippet(whole)} is outside [-{BIAS_LIMIT:g}, {BIAS_LIMIT:g}]")
        return value


assert set(BINARY) == set(_BINOPS.values())

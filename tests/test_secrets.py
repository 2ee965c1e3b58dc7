"""The secrets module: what it hides, and that every writer goes through it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from apimart_cli import secrets
from apimart_cli.errors import clipped, shown

KEY = 'sk-secrets-\\9q"Zt4Lw8Xv'


@pytest.fixture(autouse=True)
def hidden() -> None:
    secrets.hide(KEY)


def test_the_key_and_its_encoded_forms_are_hidden() -> None:
    import json
    from urllib.parse import quote

    for form in (KEY, json.dumps(KEY)[1:-1], quote(KEY, safe="")):
        assert secrets.redact(f"a {form} b") == "a [API key] b"


def test_a_long_prefix_of_the_key_is_hidden_and_a_short_one_is_not() -> None:
    assert secrets.redact(f"cut at {KEY[:8]}") == "cut at [API key]"
    assert secrets.redact(f"cut at {KEY[:20]}!") == "cut at [API key]!"
    assert secrets.redact(f"just {KEY[:7]}") == f"just {KEY[:7]}"


def test_the_key_in_base64_is_hidden_whatever_comes_before_it() -> None:
    """A server may echo the Authorization header it got, base64-encoded (`Bearer KEY`),
    or the key alone, in either alphabet: the key sits at any offset of the encoding."""
    import base64

    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for before in ("", "Bearer ", "x", "xy", "Basic: "):
            encoded = encode(f"{before}{KEY} and more".encode()).decode()
            redacted = secrets.redact(f"header {encoded} echoed")
            assert "[API key]" in redacted, (before, redacted)
            # Nothing of the key's own encoding is left but its edges, which other text shares.
            core = encode(KEY.encode()).decode()[4:-4]
            assert core[:8] not in redacted


def test_the_key_cut_at_the_front_or_split_across_fields_is_hidden() -> None:
    """A key shown without its first characters, or in two halves (`{"a": half, "b": rest}`),
    leaks the part that is left unless any long enough run of it is hidden."""
    assert secrets.redact(f"key ends {KEY[5:]}.") == "key ends [API key]."
    assert secrets.redact(f"tail {KEY[-8:]}") == "tail [API key]"
    half = len(KEY) // 2
    assert secrets.redact(f'{{"a": "{KEY[:half]}", "b": "{KEY[half:]}"}}').count("[API key]") == 2
    middle = KEY[3:14]  # 11 characters from the middle
    assert secrets.redact(f"mid {middle} mid") == "mid [API key] mid"
    assert secrets.redact(f"short {KEY[3:10]}") == f"short {KEY[3:10]}"  # 7: no secret


def test_a_text_made_of_thousands_of_parts_of_the_key_is_withheld_whole() -> None:
    """Each part of the key left after the whole forms costs a look around it: a reply of
    megabytes of the key's tail would hold the command for seconds past --timeout."""
    flood = f"{KEY[4:]} " * (secrets.MAX_PARTS + 1)
    redacted = secrets.redact(flood)
    assert redacted == f"[withheld: {len(flood)} characters holding parts of the API key]"
    # A few parts are each hidden where they are, the rest of the text kept.
    assert secrets.redact(f"a {KEY[4:]} b {KEY[4:]} c") == "a [API key] b [API key] c"


def test_a_url_encoding_in_lower_case_hex_is_hidden() -> None:
    import re
    from urllib.parse import quote

    lower = re.sub(r"%[0-9A-F]{2}", lambda escape: escape[0].lower(), quote(KEY, safe=""))
    assert lower != quote(KEY, safe="")
    assert secrets.redact(f"?k={lower}") == "?k=[API key]"


def test_the_longest_form_at_a_place_is_hidden_whole() -> None:
    import json

    escaped = json.dumps(KEY)[1:-1]  # shares its first characters with the key as typed
    assert secrets.redact(f"{KEY} and {escaped}") == "[API key] and [API key]"


def test_redact_first_then_cut() -> None:
    text = "x" * 472 + KEY + " and more"
    cut = clipped(text, 500)
    assert KEY[:8] not in cut
    assert cut.startswith("x" * 472 + "[API key]")
    assert KEY[:8] not in shown("y" * 55 + KEY)


def test_redact_data_reaches_keys_values_and_nesting() -> None:
    value = {KEY: [KEY, (1, f"x{KEY}")], "n": None}
    assert secrets.redact_data(value) == {"[API key]": ["[API key]", [1, "x[API key]"]], "n": None}


def test_forget_hides_nothing_more() -> None:
    secrets.forget()
    assert secrets.redact(KEY) == KEY


# The display; the command line, which hands the display to the library (and to the
# MCP server, which writes to standard error through what `apimart mcp` hands it).
DISPLAY = {"console.py", "progress.py", "tables.py"}
ADAPTERS = {"cli.py", "commands"}


def test_no_library_module_imports_the_display() -> None:
    package = Path(secrets.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        relative = path.relative_to(package)
        if relative.parts[0] in ADAPTERS or (relative.name in DISPLAY and len(relative.parts) == 1):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            shown = ("apimart_cli.console", "apimart_cli.progress", "apimart_cli.tables")
            if any(name.startswith(shown) for name in names):
                offenders.append(str(relative))
    assert offenders == []


def test_provenance_and_the_gallery_hide_the_key_without_being_told(tmp_path: Path) -> None:
    from apimart_cli import gallery, provenance

    chunk = provenance.itxt_chunk({"prompt": f"a fox {KEY}"})
    assert KEY.encode() not in chunk and b"[API key]" in chunk
    page = gallery.write(tmp_path, [gallery.Entry(task_id="t", prompt=f"a fox {KEY[:12]}")])
    assert KEY[:8] not in page.read_text(encoding="utf-8")

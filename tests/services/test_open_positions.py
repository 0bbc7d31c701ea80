"""Paging through every open position: the rule the single process and an edge share."""

from __future__ import annotations

import pytest

from perpstream.services.open_positions import MAX_PAGE, BadPageRequest, OpenPositions, PageRequest, page_of


def _row(n: int, account: str = "0xA") -> dict[str, object]:
    return {"user_address": account, "position_id": f"0x{n:064x}", "size": "1"}


def test_pages_follow_position_ids_and_next_is_the_last_id_of_a_full_page() -> None:
    listed = OpenPositions.of_rows([_row(3), _row(1), _row(2, "0xB")], ts=1234)
    first = page_of(listed, PageRequest(limit=2))
    assert [r["position_id"] for r in first["positions"]] == [f"0x{1:064x}", f"0x{2:064x}"]  # type: ignore[union-attr]
    assert first["total"] == 3 and first["next"] == f"0x{2:064x}" and first["ts"] == 1234
    rest = page_of(listed, PageRequest(limit=2, after=str(first["next"])))
    assert [r["position_id"] for r in rest["positions"]] == [f"0x{3:064x}"]  # type: ignore[union-attr]
    assert rest["next"] is None


@pytest.mark.parametrize(("args", "message"), [
    ({"limit": "0"}, f"limit must be an integer from 1 to {MAX_PAGE}, got '0'"),
    ({"limit": "many"}, f"limit must be an integer from 1 to {MAX_PAGE}, got 'many'"),
    ({"after": "0x12"}, "after must be a position id (0x and 64 hex digits, a page's next), got '0x12'"),
])
def test_a_bad_request_names_the_key_the_value_and_what_is_allowed(args: dict[str, str], message: str) -> None:
    with pytest.raises(BadPageRequest) as refused:
        PageRequest.parse(args)
    assert str(refused.value) == message


def test_a_cursor_is_compared_in_lower_case() -> None:
    assert PageRequest.parse({"after": "0x" + "AB" * 32}).after == "0x" + "ab" * 32


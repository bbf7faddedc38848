"""IN lists padded to a few lengths: same values, lengths 0, 1, 2, 4, 8, … up to 1,024."""

from __future__ import annotations

from daemon.store.in_lists import padded


def test_lengths_are_powers_of_two_and_the_values_the_same() -> None:
    for n in range(0, 1100):
        out = padded(range(n))
        assert set(out) == set(range(n))
        assert out[:n] == list(range(n))  # the values first, in their order
        if n <= 2 or n > 1024:
            assert len(out) == n
        else:
            assert len(out) == 1 << (n - 1).bit_length()


def test_takes_any_iterable_once() -> None:
    assert padded(x for x in "abc") == ["a", "b", "c", "c"]
    assert padded({7}) == [7]

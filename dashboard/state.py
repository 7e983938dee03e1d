"""Each page's state in its URL, always: `?sweep=quickstart&colour=net&split=plain|residual`.

Streamlit's own binding (`bind="query-params"`) leaves a value out of the URL while it equals
the widget's default, but resweep's defaults move: the sweep shown by default is the newest one,
and a page's axes are chosen from those that vary in the sweep. A link without them would open
another view once another sweep is launched. So every control here writes its value into the
URL on every run, default or not.

Where a control's value comes from, first match:
1. the URL, when it differs from what this session last wrote there (a link was opened, or a
   page was switched to with its own query: a row clicked on the Sweeps page);
2. this session's choice (the widget's own state, or the value kept while its page was away);
3. the default the page computed.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import streamlit as st

KEPT = "_resweep_kept_"  # + key: the value, kept while the control's page is not shown
WRITTEN = "_resweep_url_"  # + key: what this session last wrote into the URL for the control


def _url(key: str) -> list[str]:
    return list(st.query_params.get_all(key))


def _from_url(texts: list[str], options: Sequence[Any], many: bool) -> Any:
    """The options the URL's texts name (by their str), or None when one names no option."""
    by_text = {str(o): o for o in options}
    if not texts or any(t not in by_text for t in texts):
        return None
    return [by_text[t] for t in texts] if many else by_text[texts[-1]]


def _valid(value: Any, options: Sequence[Any], many: bool) -> bool:
    if many:
        return isinstance(value, (list, tuple)) and all(v in options for v in value)
    return value is not None and value in options


def seed(key: str, options: Sequence[Any], default: Any, many: bool = False) -> tuple[bool, Any]:
    """The control's starting value: (True, value) when it must be set through the session
    state (its widget is already there and the URL names another value), else (False, value)
    for the widget's own default argument (a first draw: setting the session state there makes
    the browser send the value back, a second run that closes a menu being opened)."""
    options = list(options)
    texts = _url(key)
    linked = _from_url(texts, options, many)
    current = st.session_state.get(key)
    drawn = key in st.session_state and _valid(current, options, many)
    if texts and texts != st.session_state.get(WRITTEN + key) and linked is not None:
        return drawn and current != linked, linked
    if drawn:
        return False, current
    kept = st.session_state.get(KEPT + key)
    if _valid(kept, options, many):
        return False, kept
    if linked is not None:
        return False, linked
    return False, (list(default) if many else default)


def _as_default(widget: Callable[..., Any], options: list, value: Any) -> dict[str, Any]:
    """`value` as the keyword that widget takes for its default."""
    name = getattr(widget, "__name__", "")
    if name == "selectbox":
        return {"index": options.index(value)}
    if name == "select_slider":
        return {"value": value}
    return {"default": value}  # multiselect, segmented_control, pills


def write(key: str, value: Any, many: bool = False) -> None:
    """Keep the value for when the page comes back, and put it into the URL."""
    st.session_state[KEPT + key] = value
    texts = [str(v) for v in value] if many else ([] if value is None else [str(value)])
    if texts:
        if _url(key) != texts:
            st.query_params[key] = texts if many else texts[0]
    elif key in st.query_params:
        del st.query_params[key]
    st.session_state[WRITTEN + key] = texts


def choose(
    widget: Callable[..., Any], label: str, options: Sequence[Any], *, key: str, default: Any,
    many: bool = False, **kwargs: Any,
) -> Any:
    """Draw `widget(label, options, key=key, **kwargs)` (a selectbox, multiselect, segmented
    control...) starting from the URL, this session or `default`; return its value, which is
    written back into the URL. A single choice that was cleared falls back to `default`."""
    options = list(options)
    through_state, start = seed(key, options, default, many)
    if through_state:
        st.session_state[key] = start
        value = widget(label, options, key=key, **kwargs)
    elif key in st.session_state:
        value = widget(label, options, key=key, **kwargs)
    else:
        value = widget(label, options, key=key, **_as_default(widget, options, start), **kwargs)
    if not many and value is None:
        value = default
    write(key, value, many)
    return value


def linked(key: str) -> str | None:
    """A value only the URL holds (no widget): the page's own key, e.g. ?trial=12."""
    texts = _url(key)
    return texts[-1] if texts else None

"""The base class of every view: typed traits as the view's contract, arrays as binary buffers,
the shared selection, calls from the front end through anywidget's ``invoke``."""

from __future__ import annotations

import base64
import functools
import inspect
import pathlib
import types
from typing import Any, Callable

import anywidget
import ipywidgets as ipw
import traitlets as t
from ipywidgets.widgets.widget import _remove_buffers

from .selection import SELECTION_KEYS, Selection
from .transport import NDArray, Offloaded, array_serialization, encode_tree, offload_state

__all__ = ["MRIWidget", "STATIC", "command", "rpc", "NDArray", "array_serialization", "reject_unknown_keywords"]

STATIC = pathlib.Path(__file__).resolve().parent.parent / "static"


class command:  # used as a decorator, like anywidget.experimental.command
    """Decorator: a method the view may call from the front end.

    The method keeps its ordinary signature for Python callers (``view.pattern(3, 1)``). For the
    front end it is an ``anywidget.experimental.command``: the view calls it with anywidget's
    ``invoke(name, {arg: value})`` (``js/src/lib/invoke.js``), and gets back ``{"result": ...}``
    with every array of the result as a binary buffer, or ``{"error": "TypeName: message"}``
    (an exception is reported to the view instead of being lost in the kernel log).
    """

    def __init__(self, fn: Callable):
        functools.update_wrapper(self, fn)
        self._fn = fn
        anywidget.experimental.command(self)  # marks it: AnyWidget.__init_subclass__ registers it

    def __get__(self, obj, objtype=None):
        return self._fn if obj is None else types.MethodType(self._fn, obj)

    def __call__(self, widget, msg, buffers):
        """anywidget's command protocol: ``(widget, msg, buffers) -> (response, buffers)``."""
        try:
            if msg is None:
                msg = {}
            if not isinstance(msg, dict):
                raise TypeError(f"{self.__name__} takes keyword arguments as an object, got {type(msg).__name__}")
            result = self._fn(widget, **msg)
            state, paths, out = _remove_buffers({"result": encode_tree(result)})
            return {"result": state.get("result"), "buffer_paths": paths}, out
        except Exception as e:  # report to the view instead of killing the comm
            return {"error": f"{type(e).__name__}: {e}"}, []


#: the former name of :class:`command` (kept for code that imported it)
rpc = command


def _keyword_names(init) -> tuple[list, list] | None:
    """(accepted, public) keyword names of ``init``; None when it takes ``**kwargs``."""
    params = inspect.signature(init).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    names = [n for n, p in list(params.items())[1:]
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    return names, [n for n in names if not n.startswith("_")]


#: the values of :attr:`MRIWidget.theme`
THEMES = ("auto", "light", "dark")


def check_theme(v) -> str:
    """``v`` if it is a theme name (:data:`THEMES`), else a TraitError saying which are."""
    if not isinstance(v, str) or v not in THEMES:
        raise t.TraitError(f"theme must be one of {', '.join(map(repr, THEMES))}, got {v!r}")
    return v


class _Theme(t.TraitType):
    """A theme name (:data:`THEMES`); anything else is a TraitError naming the choices."""

    info_text = "one of " + ", ".join(map(repr, THEMES))

    def validate(self, obj, value):
        return check_theme(value)


#: keyword arguments every MRIWidget constructor takes besides its own (base traits): their checks
SHARED_KEYWORDS = {"theme": check_theme}


def reject_unknown_keywords(cls):
    """Class decorator: unknown keyword arguments to ``cls(...)`` raise a TypeError listing the valid ones.

    Every :class:`MRIWidget` subclass gets it automatically; other widgets (the Explorer) use it
    as a decorator. Constructors that take ``**kwargs`` are left alone.
    """
    init = cls.__dict__.get("__init__")
    if init is None or getattr(init, "_mri_checked", False):
        return cls
    names = _keyword_names(init)
    if names is None:
        return cls
    accepted, public = names
    accepted = frozenset(accepted)

    # keywords every view takes besides its own (the base traits, such as theme=)
    shared = [k for k in SHARED_KEYWORDS if k not in accepted and cls.class_traits().get(k) is not None] \
        if hasattr(cls, "class_traits") else []
    public = public + shared

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        unknown = [k for k in kwargs if k not in accepted and k not in shared]
        if unknown:
            raise TypeError(f"{cls.__name__}() got unknown keyword argument{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))}; valid keyword arguments: {', '.join(public)}")
        given = {k: kwargs.pop(k) for k in shared if k in kwargs}
        for k, v in given.items():  # checked before the (possibly long) constructor runs
            SHARED_KEYWORDS[k](v)
        init(self, *args, **kwargs)
        for k, v in given.items():
            setattr(self, k, v)

    __init__._mri_checked = True
    cls.__init__ = __init__
    return cls


class MRIWidget(anywidget.AnyWidget):
    """Base of all mri_widgets views.

    The contract between a widget and its view is its synced traits: each view declares typed,
    documented traits (``height = t.Int(480).tag(sync=True)``; arrays as :class:`NDArray`) and
    its JS module lists the same names (``defineView({traits: [...]})`` in
    ``js/src/lib/widget.js``). :meth:`view_traits` names them; :attr:`data` reads them as one dict.
    Subclasses set ``_view = "lens_table"`` (the bundle ``static/lens_table.js``).

    Unknown keyword arguments to any subclass's constructor raise a TypeError listing the valid
    ones. Methods decorated with :func:`command` can be called from the view.

    Selection: ``selection`` is the shared :class:`Selection`. The front end sets it directly
    when it can reach that widget model (JupyterLab, Notebook 7, VS Code); where it cannot
    (Colab's separate output frames) it writes the view's own ``_sel`` mirror instead and Python
    forwards it, and Python pushes every selection change into each view's ``_sel``.
    """

    _view: str = ""
    _css = STATIC / "mri.css"

    selection = t.Instance(Selection).tag(sync=True, **ipw.widget_serialization)
    _sel = t.Dict().tag(sync=True)
    #: a message shown above the view (the last failed update); empty when all is well
    error = t.Unicode("").tag(sync=True)
    #: colours of the view: "auto" follows the notebook's theme (JupyterLab's light or dark theme,
    #: else the browser's prefers-color-scheme); "light" or "dark" force one. Every view takes it as
    #: a keyword (``LensTable(model, prompt, theme="dark")``) and it can be changed at any time.
    theme = _Theme("auto").tag(sync=True)

    def __init__(self, *, selection: Selection | None = None, **kwargs: Any):
        if selection is not None and not isinstance(selection, Selection):
            raise TypeError(f"selection must be a mri_widgets.Selection, got {type(selection).__name__}")
        unknown = [k for k in kwargs if k not in self.view_traits()]
        if unknown:
            raise TypeError(f"{type(self).__name__} has no view traits {unknown}; its traits: {self.view_traits()}")
        super().__init__(selection=selection if selection is not None else Selection(), **kwargs)
        self.on_msg(self._on_custom_msg)

    def __init_subclass__(cls, **kwargs):
        if cls.__dict__.get("_view"):
            cls._esm = STATIC / f"{cls._view}.js"  # anywidget reads the file in its __init_subclass__
        reject_unknown_keywords(cls)
        super().__init_subclass__(**kwargs)

    # ---- the contract ------------------------------------------------------------------------
    @classmethod
    def view_traits(cls) -> list:
        """Names of the synced traits this view adds to the base (its parameters and its data)."""
        base = set(MRIWidget.class_trait_names(sync=True))
        return sorted(n for n in cls.class_trait_names(sync=True) if n not in base and not n.startswith("_"))

    @property
    def data(self) -> dict:
        """Everything the view shows, as ``{trait name: value}`` (read-only; set the traits)."""
        return {n: getattr(self, n) for n in self.view_traits()}

    def _set_data(self, values: dict) -> None:
        """Set several view traits at once (one message to the front end); clears :attr:`error`."""
        names = self.view_traits()
        unknown = [k for k in values if k not in names]
        if unknown:  # e.g. a base trait such as ``tooltip``, which the DOM widget itself shows
            raise TypeError(f"{type(self).__name__} has no view traits {unknown}; declare them (traits: {names})")
        with self.hold_sync(), self.hold_trait_notifications():
            self.error = ""
            for k, v in values.items():
                setattr(self, k, v)

    # ---- sharing ------------------------------------------------------------------------------
    def save_html(self, path, *, title: str | None = None):
        """Write this view into one standalone HTML file (offline, no kernel; see
        :func:`mri_widgets.save_html` to put several linked views in one page). Returns the path."""
        from .share import save_html

        return save_html(path, self, title=title)

    def _baked_commands(self) -> dict:
        """Answers to this view's commands that a page saved with :meth:`save_html` gives without a
        kernel: ``{command name: spec}``, each spec whole or from
        :func:`mri_widgets.widgets.share.baked_rows`. None by default (calls fail with a note)."""
        return {}

    def picture(self):
        """A static :class:`~mri_widgets.widgets.pictures.Picture` of what the view shows now, drawn in
        Python from its data (tables, heatmaps, graphs); None for views without one."""
        from .pictures import picture

        return picture(self)

    def _save_picture(self, path, fmt: str):
        pic = self.picture()
        if pic is None:
            raise TypeError(f"{type(self).__name__} has no static picture; save it as a page with w.save_html(path)")
        return pic.save(path, fmt)

    def save_png(self, path):
        """Save a PNG picture of the view's current data (drawn in Python with Pillow, no front end
        needed). Returns the path; a TypeError for views without a picture."""
        return self._save_picture(path, "png")

    def save_svg(self, path):
        """Save an SVG picture of the view's current data (drawn in Python, no front end needed)."""
        return self._save_picture(path, "svg")

    def _repr_mimebundle_(self, **kwargs):
        """The live widget, plus a PNG of its current data for front ends that cannot show widgets
        (GitHub, nbviewer, ``nbconvert --to html``); live front ends keep rendering the widget.
        Turned off by ``mri_widgets.widgets.pictures.STATIC_IMAGES = False``."""
        bundle = super()._repr_mimebundle_(**kwargs)
        from . import pictures

        if not pictures.STATIC_IMAGES or bundle is None:
            return bundle
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
        try:
            pic = self.picture()
            png = pic.png() if pic is not None else None
        except Exception:  # a picture must never break showing the live view
            png = None
        if png is None:
            return bundle
        data = {**data, "image/png": base64.b64encode(png).decode("ascii")}
        meta = {**(meta or {}), "image/png": {"width": pic.width, "height": pic.height}}
        return data, meta

    # ---- large states: sent in pieces (see transport.offload_state) ----------------------------
    def get_state(self, key=None):
        """The serialised state, its heaviest traits replaced by placeholders when it would pass
        :data:`~mri_widgets.widgets.transport.STATE_BUDGET` (the view fetches them in pieces)."""
        state = super().get_state(key)
        if "_mri_offloaded" not in self.__dict__:
            self.__dict__["_mri_offloaded"] = Offloaded()
        return offload_state(state, self.__dict__["_mri_offloaded"])

    @command
    def _mri_chunk(self, token: str, index: int) -> dict:
        """Piece ``index`` of an offloaded trait (the view joins the pieces)."""
        store = self.__dict__.get("_mri_offloaded")
        if store is None:
            raise KeyError(f"no pending data {token!r}")
        return {"data": store.chunk(str(token), int(index))}

    # ---- selection -------------------------------------------------------------------------
    @t.observe("selection")
    def _rewire_selection(self, change):
        old = change["old"]
        if old is not None:
            old.unobserve(self._push_sel, names=list(SELECTION_KEYS))
        change["new"].observe(self._push_sel, names=list(SELECTION_KEYS))
        self._push_sel()

    def _push_sel(self, change=None):
        self._sel = self.selection.to_dict()

    @t.observe("_sel")
    def _pull_sel(self, change):
        new = change["new"] or {}
        diff = {k: v for k, v in new.items() if k in SELECTION_KEYS and getattr(self.selection, k) != v}
        if diff:
            self.selection.update(**diff)

    def select(self, **values) -> None:
        """Set the shared selection from Python (same as ``self.selection.update``)."""
        self.selection.update(**values)

    # ---- messages from the front end -------------------------------------------------------
    def _on_custom_msg(self, widget, content, buffers):
        if not isinstance(content, dict):
            return
        if content.get("kind") == "anywidget-command":
            # anywidget answers the commands it knows; answer the others, or the view waits for nothing
            known = getattr(type(self), "_anywidget_commands", {})
            if content.get("name") not in known:
                self.send({"id": content.get("id"), "kind": "anywidget-command-response",
                           "response": {"error": f"unknown command {content.get('name')!r}; "
                                                 f"this view has {sorted(known)}"}})
            return
        if content.get("type") == "request_state":
            # Colab drops the binary buffers of the initial state: the view asks for those traits again.
            names = self.view_traits()
            keys = [k for k in (content.get("keys") or names) if k in names]
            if keys:
                self.send_state(keys)

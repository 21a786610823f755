"""A detection's napari layers: what they look like, where they sit, and how results are compared.

One result is a group of layers named after the scan, bottom to top: the per-step restorations
(hidden until asked for), the map after each step (hidden; both share the "step" slider), the final
anomaly map drawn translucently over the scan (transparent below the brain's median score), and the
mask as cyan outlines. A re-run replaces the data in place and keeps what the user changed
(colormap, opacity, contrast limits, visibility). Kept results get their settings in their names and
can be laid side by side in napari's grid, each over its own copy of the scan, each with its mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Layer
from napari.utils.colormaps import Colormap, DirectLabelColormap

from ..detection.display import map_contrast_limits
from .berdiff_controls import flip_mask_kwargs
from .contrast_pickers import channel_layers
from .layers import derived_kwargs

if TYPE_CHECKING:
    import napari

    from ..detection.pipeline import Detection

OUTPUT_KEY = "napari_disyre_output"  # metadata: the role of a layer this plugin made
GROUP_KEY = "napari_disyre_result"  # metadata: which result (group of layers) it belongs to
LIMITS_KEY = "napari_disyre_limits"  # metadata: the contrast limits last chosen by the plugin
ROLES = ("restorations", "accumulated map by step", "anomaly map", "anomaly mask", "flip mask")
UNDERLAY = "scan copy"  # role of the scan copies under each result in the comparison grid

#: Transparent at the floor (the brain's median score), red around the threshold, yellow at the top.
HEAT = Colormap(
    colors=[
        [1.0, 0.0, 0.0, 0.0],
        [1.0, 0.05, 0.0, 0.35],
        [1.0, 0.35, 0.0, 0.85],
        [1.0, 0.85, 0.1, 0.9],
        [1.0, 1.0, 0.6, 0.9],
    ],
    controls=[0.0, 0.2, 0.45, 0.75, 1.0],
    name="DISYRE heat",
)
MASK_COLOURS = DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: "cyan"})


def is_output(layer: Layer) -> bool:
    """Whether ``layer`` is one this plugin made (never offered as a scan to analyse)."""
    return bool(layer.metadata.get(OUTPUT_KEY))


def layer_name(group: str, role: str) -> str:
    return f"{group} {role}"


@dataclass
class ResultLayers:
    """The layers of one result (absent roles are None)."""

    restorations: Image | None
    step_maps: Image | None
    anomaly_map: Image | None
    mask: Labels | None
    flip_mask: Image | None = None  # masked Bernoulli diffusion only


def find_result(viewer: napari.Viewer, group: str) -> ResultLayers:
    """The layers of result ``group`` still in the viewer (the user may have deleted some)."""
    found: dict[str, Any] = {}
    for layer in viewer.layers:
        if layer.metadata.get(GROUP_KEY) == group:
            found[layer.metadata[OUTPUT_KEY]] = layer
    return ResultLayers(*(found.get(role) for role in ROLES))


def show_detection(viewer: napari.Viewer, source: Image, detection: Detection, threshold: float) -> None:
    """Add (or refresh in place) the layers of ``detection`` on ``source``, just above the scan."""
    group = source.name
    limits = map_contrast_limits(detection.anomaly_map, detection.foreground, threshold)
    heat = {"colormap": HEAT, "blending": "translucent", "opacity": 0.9}
    stacks = {
        "restorations": (detection.restorations, {"colormap": "gray", "visible": False}),
        "accumulated map by step": (detection.step_maps, {**heat, "visible": False}),
    }
    if detection.channel_maps:  # several contrasts: restorations per contrast (channel_layers)
        stacks.pop("restorations")
    for role, (steps, style) in stacks.items():
        if steps:
            kwargs = derived_kwargs(source, "", leading_dims=1)
            if role == "restorations":
                kwargs["contrast_limits"] = (0.0, 1.0)
            else:
                kwargs["contrast_limits"] = limits
            _show(viewer, source, group, role, Image, np.stack(steps), {**kwargs, **style})
        elif layer_name(group, role) in viewer.layers:  # e.g. no map per step from Bernoulli diffusion
            viewer.layers.remove(layer_name(group, role))
    _show(
        viewer,
        source,
        group,
        "anomaly map",
        Image,
        detection.anomaly_map,
        {**derived_kwargs(source, "", contrast_limits=limits), **heat},
    )
    flip_name = layer_name(group, "flip mask")
    if detection.flip_mask is not None:  # Bernoulli diffusion: fraction of latent bits flipped, 0 to 1
        _show(
            viewer,
            source,
            group,
            "flip mask",
            Image,
            detection.flip_mask,
            flip_mask_kwargs(derived_kwargs(source, ""), detection.flip_mask),
        )
    elif flip_name in viewer.layers:  # a DISYRE run: a previous run's flip mask would mislead
        viewer.layers.remove(flip_name)
    _show(
        viewer,
        source,
        group,
        "anomaly mask",
        Labels,
        np.zeros(detection.scan.shape, np.uint8),
        derived_kwargs(source, "", colormap=MASK_COLOURS, opacity=1.0),
    )
    _show_channels(viewer, source, group, detection, {**heat, "contrast_limits": limits})
    mask = find_result(viewer, group).mask
    if mask is not None and mask.metadata.get(LIMITS_KEY) is None:
        mask.contour = 1
        mask.metadata[LIMITS_KEY] = "outlined"
    name_the_step_slider(viewer)


def name_the_step_slider(viewer: napari.Viewer, *_: Any) -> None:
    """Call the step slider "step k of S" after the step it shows. napari 0.9 numbers a slider's
    positions from 0 whatever the layers' translate (which moves world coordinates only), so its
    name is where the method's own count, 1 to S, can be read."""
    stacks = [layer for layer in viewer.layers if layer.ndim == 4 and layer.metadata.get(OUTPUT_KEY) in ROLES]
    if not stacks or viewer.dims.ndim != 4:
        return
    name = f"step {viewer.dims.current_step[0] + 1} of {viewer.dims.nsteps[0]}"
    for layer in stacks:
        if layer.axis_labels[0] != name:
            layer.axis_labels = (name, *layer.axis_labels[1:])


def _show_channels(
    viewer: napari.Viewer, source: Image, group: str, detection: Detection, heat: dict[str, Any]
) -> None:
    """Several contrasts: a (hidden) map and restorations layer per contrast beside the combined map;
    per-contrast layers of an earlier run that this one did not make are removed."""
    made = set()
    for role, data, kwargs in channel_layers(detection, source):
        style = heat if role.startswith("anomaly map") else {}
        _show(viewer, source, group, role, Image, data, {**kwargs, **style, "visible": False})
        made.add(role)
    for layer in list(viewer.layers):
        role = layer.metadata.get(OUTPUT_KEY, "")
        if layer.metadata.get(GROUP_KEY) == group and role.endswith(")") and role not in made:
            viewer.layers.remove(layer)


def _show(
    viewer: napari.Viewer,
    source: Image,
    group: str,
    role: str,
    kind: type,
    data: np.ndarray,
    kwargs: dict[str, Any],
) -> None:
    """Refresh layer ``role`` of ``group`` in place (keeping the user's display choices), or add it
    right above the scan (below the layers added before it, so the roles stack in order)."""
    name = layer_name(group, role)
    limits = kwargs.get("contrast_limits")
    if name in viewer.layers and isinstance(viewer.layers[name], kind):
        layer = viewer.layers[name]
        user_limits = getattr(layer, "contrast_limits", None)
        layer.data = data
        layer.affine = kwargs["affine"]
        if limits is not None:
            chose_own = not np.allclose(user_limits, layer.metadata.get(LIMITS_KEY, user_limits))
            layer.contrast_limits = user_limits if chose_own else limits
            layer.metadata[LIMITS_KEY] = layer.metadata[LIMITS_KEY] if chose_own else tuple(limits)
        return
    if name in viewer.layers:
        viewer.layers.remove(name)
    metadata = {**kwargs.pop("metadata", {}), OUTPUT_KEY: role, GROUP_KEY: group}
    if limits is not None:
        metadata[LIMITS_KEY] = tuple(limits)
    add = viewer.add_image if kind is Image else viewer.add_labels
    layer = add(data, **{**kwargs, "name": name, "metadata": metadata})
    # directly above the scan, and above this result's layers added before it
    below = [viewer.layers.index(source)] + [
        viewer.layers.index(other)
        for other in viewer.layers
        if other is not layer and other.metadata.get(GROUP_KEY) == group
    ]
    viewer.layers.move(viewer.layers.index(layer), max(below) + 1)


def keep_result(viewer: napari.Viewer, group: str, label: str) -> str | None:
    """Rename result ``group``'s layers to ``"<group> [label]"`` so the next run makes new ones;
    returns the new group name (None when no layer of the result is left)."""
    layers = [layer for layer in viewer.layers if layer.metadata.get(GROUP_KEY) == group]
    if not layers:
        return None
    kept = f"{group} [{label}]"
    for layer in layers:
        layer.metadata[GROUP_KEY] = kept
        layer.name = layer_name(kept, layer.metadata[OUTPUT_KEY])
    return kept


def viewer_grid(viewer: napari.Viewer) -> Any:
    """napari's grid settings: ``viewer.canvas.grid`` since napari 0.9, ``viewer.grid`` before it."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


def toggle_comparison(viewer: napari.Viewer, scan: Image) -> int:
    """Lay every result on ``scan`` side by side in napari's grid (each over its own copy of the
    scan, with its own mask and threshold), or undo that; returns the number of results shown."""
    grid = viewer_grid(viewer)
    if grid.enabled:
        for layer in [layer for layer in viewer.layers if layer.metadata.get(OUTPUT_KEY) == UNDERLAY]:
            viewer.layers.remove(layer)
        grid.enabled = False
        return 0
    groups = [
        layer.metadata[GROUP_KEY]
        for layer in viewer.layers
        if layer.metadata.get(OUTPUT_KEY) == "anomaly map" and _belongs_to(layer, scan)
    ]
    if len(groups) < 2:
        return len(groups)
    order: list[Layer] = []
    for index, group in enumerate(groups):
        under = scan if index == 0 else _scan_copy(viewer, scan, group)
        order.append(under)
        result = find_result(viewer, group)
        order.extend(layer for layer in (result.anomaly_map, result.mask) if layer is not None)
        if result.mask is None:  # keep every cell the same size
            order.append(_scan_copy(viewer, scan, group, visible=False))
    for index, layer in enumerate(order):  # the cells first; other layers after them
        viewer.layers.move(viewer.layers.index(layer), index)
    grid.stride = 3
    grid.enabled = True
    return len(groups)


def _belongs_to(layer: Layer, scan: Image) -> bool:
    group = layer.metadata.get(GROUP_KEY, "")
    return group == scan.name or group.startswith(f"{scan.name} [")


def _scan_copy(viewer: napari.Viewer, scan: Image, group: str, visible: bool = True) -> Image:
    """The scan once more (same array, no copy) to sit under ``group`` in its grid cell."""
    return viewer.add_image(
        scan.data,
        name=layer_name(group, UNDERLAY),
        affine=scan.affine,
        axis_labels=scan.axis_labels,
        colormap=scan.colormap,
        contrast_limits=scan.contrast_limits,
        visible=visible,
        metadata={**scan.metadata, OUTPUT_KEY: UNDERLAY, GROUP_KEY: group},
    )

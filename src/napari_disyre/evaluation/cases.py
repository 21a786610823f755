"""Which labelled scans to evaluate: pairs of scan and label (and an optional brain mask), found by
name in two folders, in per-patient folders, or listed in a CSV file; read strictly, so that a
mistyped or duplicated row is refused with its line instead of silently scoring the wrong pair."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..scans.nifti import is_nifti_path, strip_nifti_extension
from ..validation import CaseFields, check


@dataclass(frozen=True)
class Case:
    """One labelled scan: ``label > 0`` marks the anomalous voxels; ``brain_mask`` is optional.

    Several contrasts: ``contrasts`` holds ``(name, path)`` per contrast, and ``scan`` is the first
    one's path (the grid the label must lie on, and the scan of the intensity baselines). The id
    names its row of the report and its saved maps, so it is a plain name (:data:`CaseId`)."""

    id: str
    scan: Path
    label: Path
    brain_mask: Path | None = None
    contrasts: tuple[tuple[str, Path], ...] = ()

    @property
    def inputs(self) -> list[Path]:
        """Every file the case reads."""
        scans = [path for _, path in self.contrasts] or [self.scan]
        return [*scans, self.label, *([self.brain_mask] if self.brain_mask else [])]

    def __post_init__(self) -> None:
        check(CaseFields, {"id": self.id}, f"{self.scan}: case id", error=InputError)


#: What may follow a scan's stem in its label's (or brain mask's) name: ``case1`` pairs with
#: ``case1.nii.gz`` or ``case1_seg.nii.gz``, never with ``case10``'s files.
LABEL_SUFFIXES = ("", "_seg", "_label", "_labels", "_lesion", "_lesions", "_mask", "_gt", "_roi")
BRAIN_MASK_SUFFIXES = ("", "_brainmask", "_brain_mask", "_brain", "_mask")
#: The columns of a pairs CSV.
PAIRS_COLUMNS = ("scan", "label", "brain_mask", "id")


# -- pairing --------------------------------------------------------------------------------------


def _nifti_files(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: the {what} folder does not exist.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_nifti_path(p))
    if not files:
        raise InputError(f"{folder}: no NIfTI (.nii/.nii.gz) {what} found.")
    return files


def _match(
    scan: Path, stem: str, candidates: dict[str, Path], suffixes: tuple[str, ...], what: str
) -> Path | None:
    """The one candidate named ``stem`` plus one of ``suffixes``; None when there is none; two (``case1``
    and ``case1_seg``) are an error naming both, since either could be meant."""
    found = [candidates[stem + s] for s in suffixes if stem + s in candidates]
    if len(found) > 1:
        raise InputError(
            f"{scan}: two {what}s are named like this scan ({found[0]} and {found[1]}); keep one, or list "
            "the pairs in a CSV (--pairs)."
        )
    return found[0] if found else None


def _expected(stem: str, suffixes: tuple[str, ...]) -> str:
    return " or ".join(f"{stem}{s}.nii[.gz]" for s in suffixes[:3]) + " ..."


def cases_by_name(scans: Path, labels: Path, brain_masks: Path | None = None) -> list[Case]:
    """Pair each scan of the folder ``scans`` with the label (and brain mask) of the same name.

    A label named exactly like the scan, or like the scan plus one of :data:`LABEL_SUFFIXES`
    (``case1`` and ``case1_seg``), matches; nothing else does (``case1`` never takes ``case10``'s
    label). Every scan must find its label: unmatched scans are listed in the error, because a
    silently skipped scan changes the pooled figures; two candidates are an error naming both.
    """
    label_files = {strip_nifti_extension(p.name): p for p in _nifti_files(labels, "labels")}
    mask_files = (
        {strip_nifti_extension(p.name): p for p in _nifti_files(brain_masks, "brain masks")}
        if brain_masks
        else {}
    )
    cases, missing = [], []
    for scan in _nifti_files(scans, "scans"):
        stem = strip_nifti_extension(scan.name)
        label = _match(scan, stem, label_files, LABEL_SUFFIXES, "label")
        if label is None:
            missing.append(scan.name)
            continue
        mask = _match(scan, stem, mask_files, BRAIN_MASK_SUFFIXES, "brain mask") if brain_masks else None
        if brain_masks and mask is None:
            raise InputError(
                f"{scan}: no brain mask named {_expected(stem, BRAIN_MASK_SUFFIXES)} in {brain_masks}."
            )
        cases.append(Case(stem, scan, label, mask))
    if missing:
        raise InputError(
            f"{len(missing)} scan(s) in {scans} have no label of the same name in {labels}: "
            + ", ".join(missing)
            + f" (for {missing[0]}: {_expected(strip_nifti_extension(missing[0]), LABEL_SUFFIXES)}, the "
            f"suffixes being {', '.join(s for s in LABEL_SUFFIXES if s)}). Name each label like its scan, "
            "or list the pairs in a CSV (--pairs)."
        )
    return refuse_duplicates(cases, str(scans))  # case1.nii beside case1.nii.gz


def cases_in_folders(
    root: Path, scan_name: str | dict[str, str], label_name: str, mask_name: str | None = None
) -> list[Case]:
    """One case per sub-folder of ``root`` holding ``scan_name`` (BraTS- or BIDS-like layouts): the
    folder name is the case id, the label and brain mask sit beside the scan.

    Several contrasts: ``scan_name`` maps each contrast to its file name, in channel order; a folder
    holding any of them must hold all (a patient silently left out would change the pooled figures)."""
    names = scan_name if isinstance(scan_name, dict) else {"": scan_name}
    folders = (
        sorted({p.parent for name in names.values() for p in root.glob(f"*/{name}")}) if root.is_dir() else []
    )
    if not folders:
        raise InputError(
            f"{root}: no sub-folder holds a scan named {' or '.join(map(repr, names.values()))}."
        )
    cases = []
    for folder in folders:
        missing = [name for name in names.values() if not (folder / name).is_file()]
        if missing:
            raise InputError(
                f"{folder}: no {', '.join(missing)} here, though other contrasts are; give every patient "
                "every contrast, or move the folder out of the cohort."
            )
        first = next(iter(names.values()))
        label = folder / label_name
        if not label.exists():
            raise InputError(f"{folder}: the scan {first} has no label {label_name} beside it.")
        mask = folder / mask_name if mask_name else None
        if mask is not None and not mask.exists():
            raise InputError(f"{folder}: no brain mask {mask_name} beside the scan.")
        contrasts = tuple((c, folder / n) for c, n in names.items()) if isinstance(scan_name, dict) else ()
        cases.append(Case(folder.name, folder / first, label, mask, contrasts))
    return cases


def cases_from_csv(path: Path) -> list[Case]:
    """Cases listed in a CSV with the columns ``scan,label`` and optionally ``brain_mask`` and ``id``;
    relative paths are relative to the CSV's folder. UTF-8 (with or without Excel's byte-order mark);
    spaces around names and values are ignored; every row must fill the scan and label cells.

    Several contrasts: no ``scan`` column, one column per contrast named by it instead
    (``flair,t2,label``): every column but ``label``, ``brain_mask`` and ``id`` is then a contrast."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            table = [[cell.strip() for cell in row] for row in csv.reader(handle)]
    except OSError as exc:
        raise InputError(f"{path}: cannot read the pairs file ({exc.strerror}).") from exc
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#x} at offset {exc.start}; Latin-1 or "
            "Windows encoding?). Save the pairs file as 'CSV UTF-8'."
        ) from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a readable CSV ({exc}).") from None
    numbered = [(n, row) for n, row in enumerate(table, start=1) if any(row)]
    header = numbered[0][1] if numbered else []
    _check_header(path, header)
    contrasts = [] if "scan" in header else [c for c in header if c not in ("label", "brain_mask", "id")]
    scan_columns = contrasts or ["scan"]
    if len(numbered) == 1:
        raise InputError(
            f"{path}: the pairs CSV has its header but no rows: list one scan,label pair per line."
        )
    rows = []
    for line, cells in numbered[1:]:
        if len(cells) != len(header):
            raise InputError(
                f"{path}, line {line}: {len(cells)} cell(s) where the header has {len(header)} "
                f"({','.join(header)}); fill every column (an empty cell may stay empty for id/brain_mask)."
            )
        row = dict(zip(header, cells, strict=True))
        empty = [k for k in (*scan_columns, "label") if not row[k]]
        if empty:
            raise InputError(f"{path}, line {line}: the {' and '.join(empty)} cell is empty.")
        rows.append(row)

    def resolve(value: str) -> Path:
        return (path.parent / value).resolve()

    # Per-patient folders often hold identically named files: then the folder names the case.
    names = [Path(r[scan_columns[0]]).name for r in rows]
    cases = []
    for row, name in zip(rows, names, strict=True):
        scan = resolve(row[scan_columns[0]])
        shared = names.count(name) > 1
        case_id = row.get("id") or (scan.parent.name if shared else strip_nifti_extension(scan.name))
        mask = resolve(row["brain_mask"]) if row.get("brain_mask") else None
        named = tuple((c, resolve(row[c])) for c in contrasts)
        cases.append(Case(case_id, scan, resolve(row["label"]), mask, named))
    return refuse_duplicates(cases, str(path))


def _check_header(path: Path, header: list[str]) -> None:
    """Refuse a header without label and scan (or contrast) columns, naming a column twice (the last
    would win) or naming one this reader does not know (a misspelt ``brainmask`` would be ignored and
    the metrics change). Without a scan column the other columns name contrasts; one that looks like a
    misspelt known column is refused all the same."""
    import difflib

    contrasts = [] if "scan" in header else [c for c in header if c not in PAIRS_COLUMNS]
    if "label" not in header or not ("scan" in header or contrasts):
        raise InputError(
            f"{path}: a pairs CSV needs a header with the columns scan,label[,brain_mask][,id], or one "
            "column per contrast instead of scan (e.g. flair,t2,label)."
        )
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise InputError(f"{path}: the header names the column {twice[0]!r} twice; keep one of them.")
    for column in (c for c in header if c not in PAIRS_COLUMNS):
        close = difflib.get_close_matches(column.lower(), PAIRS_COLUMNS, n=1, cutoff=0.75)
        if "scan" in header or close:
            raise InputError(
                f"{path}: unknown column {column!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; a pairs CSV has the columns {', '.join(PAIRS_COLUMNS)}. Rename or remove it."
            )


def refuse_duplicates(cases: Sequence[Case], source: str) -> list[Case]:
    """A scan listed twice would count twice in the pooled metrics, and two cases with one id would
    overwrite each other's per-volume figures and saved maps: both are refused."""
    for what, key in (("scan", lambda c: c.scan.resolve()), ("case id", lambda c: c.id)):
        seen: dict[object, Case] = {}
        for case in cases:
            if key(case) in seen:
                raise InputError(
                    f"{source}: the {what} {key(case)} appears twice ({seen[key(case)].scan} and {case.scan}); "
                    "list each case once, with its own id (an id column names the cases)."
                )
            seen[key(case)] = case
    return list(cases)


# -- scoring --------------------------------------------------------------------------------------

"""``make mutate``: mutation testing (mutmut 3) of the named modules, one module at a time.

Usage (from the repository root)::

    python tools/mutate.py                                  # every module in MODULES
    python tools/mutate.py tensornet/core/split.py ...      # some of them
    python tools/mutate.py --jobs 2 tensornet/formats/tucker.py
    python tools/mutate.py --survivors tensornet/formats/tucker.py   # after adding tests
    python tools/mutate.py --resume tensornet/core/contract.py       # after an interruption
    python tools/mutate.py --only 'tensornet.core.contract.x_compiled*' \
        tensornet/core/contract.py                                   # one function's mutants

Each module is mutated in a scratch copy of the working tree (``.mutate/<module>``, ignored by
git) with only the test files that cover it (``TESTS`` below), ``-x`` and one thread, so a
mutant costs seconds. Per module it prints killed / survived / no tests / equivalent and the
score ``killed / (mutants - equivalent)``; "no tests" (lines no selected test reaches) count as
not killed. ``--only PATTERN`` runs and scores just the mutants whose names match (fnmatch),
e.g. the mutants of one function after it changed. Survivors are listed in
``.mutate/<module>/survivors.txt`` and their diffs in ``survivors.diff`` there
(``--diffs-only`` rewrites that file without rerunning).

Equivalent mutants (same behaviour as the original, so no test can kill them) are listed with
the reason in ``tools/equivalent_mutants/<module>.txt``, one ``<mutant name>  # why`` per line;
they are left out of the score. Mutant names are mutmut's (``module.x_function__mutmut_N``) and stay
stable while the function's source is unchanged.

Slow by design (minutes per module on one core): not part of ``make test`` or CI.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".mutate"
EQUIVALENT = ROOT / "tools" / "equivalent_mutants"

# module -> the test files that cover it (what each mutant is run against). Groups are kept apart
# by blank lines so that work on one group merges cleanly with work on another.
TESTS: dict[str, list[str]] = {
    # core: truncation policy, validation, spectra, splits
    "tensornet/core/truncation.py": ["tests/core/test_truncation.py", "tests/test_bad_inputs.py"],
    "tensornet/core/validate.py": ["tests/core/test_validate.py", "tests/test_bad_inputs.py"],
    "tensornet/core/spectrum.py": ["tests/core/test_spectrum_values.py", "tests/test_spectra.py"],
    "tensornet/core/split.py": ["tests/core/test_split.py", "tests/core/test_split_details.py"],

    # core: the graph, gauges, linear algebra
    "tensornet/core/network.py": ["tests/core/test_network.py", "tests/core/test_network_calls.py"],
    "tensornet/core/netcontract.py": [
        "tests/core/test_network.py", "tests/core/test_network_calls.py",
        "tests/core/test_planning.py",
    ],
    "tensornet/core/node.py": ["tests/core/test_node.py"],
    "tensornet/core/gauge.py": ["tests/core/test_gauge.py"],
    "tensornet/core/linalg.py": ["tests/core/test_linalg.py", "tests/core/test_gradients.py"],

    # core: contraction, planning, execution
    "tensornet/core/contract.py": [
        "tests/core/test_contract_details.py", "tests/core/test_contract.py",
        "tests/core/test_planning.py",
    ],
    "tensornet/core/einsum.py": ["tests/core/test_einsum.py"],
    "tensornet/core/executor.py": [
        "tests/core/test_executor.py", "tests/core/test_executor_plans.py",
    ],
    "tensornet/core/pathfind.py": ["tests/core/test_pathfind.py"],
    "tensornet/core/slicing.py": ["tests/core/test_slicing.py"],

    # formats: the shared base and structures, Tucker, TT, TT-matrix
    "tensornet/formats/base.py": [
        "tests/formats/test_base.py", "tests/formats/test_common.py",
        "tests/formats/test_base_gradients.py", "tests/formats/test_tensorized_formats.py",
    ],
    "tensornet/formats/steps.py": [
        "tests/formats/test_base.py", "tests/formats/test_base_gradients.py",
        "tests/formats/test_common.py", "tests/formats/test_shared_steps.py",
    ],
    "tensornet/formats/structure.py": [
        "tests/formats/test_structure.py", "tests/formats/test_common.py",
        "tests/formats/test_base.py::test_chain_factors_open_and_ring",
    ],
    "tensornet/formats/tucker.py": [
        "tests/formats/test_tucker.py", "tests/formats/test_common.py",
        "tests/formats/test_tensorized_formats.py",
    ],
    "tensornet/formats/tt.py": ["tests/formats/test_tt.py"],
    "tensornet/formats/ttmatrix.py": ["tests/formats/test_ttmatrix.py"],
    "tensornet/formats/tensorize.py": [
        "tests/formats/test_ttmatrix.py", "tests/formats/test_tensorized_formats.py",
    ],

    # formats: CP, HT, TR, low rank, grouped; the analysis helpers
    "tensornet/formats/cp.py": [
        "tests/formats/test_cp.py", "tests/formats/test_cp_details.py",
        "tests/formats/test_tensorized_formats.py",
    ],
    "tensornet/formats/ht.py": ["tests/formats/test_ht.py", "tests/formats/test_ht_details.py"],
    "tensornet/formats/tr.py": [
        "tests/formats/test_tr_lowrank_grouped.py", "tests/formats/test_tr_details.py"
    ],
    "tensornet/formats/lowrank.py": [
        "tests/formats/test_tr_lowrank_grouped.py", "tests/formats/test_lowrank_details.py"
    ],
    "tensornet/formats/grouped.py": [
        "tests/formats/test_tr_lowrank_grouped.py", "tests/formats/test_grouped_details.py"
    ],
    "tensornet/formats/cutformat.py": ["tests/formats/test_cutformat.py"],
    "tensornet/analysis.py": [
        "tests/test_analysis.py", "tests/test_analysis_details.py", "tests/test_spectra_shared.py",
    ],
    "tensornet/runs.py": [
        "tests/test_runs.py", "tests/test_analysis_details.py", "tests/test_permissions.py"
    ],
    "tensornet/io.py": ["tests/test_io.py", "tests/test_permissions.py"],

    # the ground floor: weights and layer selection
    "tensornet/weights.py": ["tests/test_weights.py", "tests/test_spectra_compressed.py"],
    "tensornet/nn/select.py": ["tests/nn/test_select.py"],

    # the command line
    "tensornet/cli.py": ["tests/test_cli.py", "tests/test_checkpoints.py"],
    "tensornet/checkpoints.py": ["tests/test_cli.py", "tests/test_checkpoints.py"],

    # nn: saving and loading compressed models
    "tensornet/nn/serialize.py": [
        "tests/nn/test_serialize.py",
        "tests/test_checkpoints.py",
        *(f"tests/nn/test_grouped.py::test_{t}" for t in (
            "save_and_load_record_the_groups", "an_old_record_without_groups_loads_as_groups_one",
            "a_bad_groups_field_is_refused", "a_linear_record_takes_no_groups_field",
        )),
    ],  # fmt: skip
    "tensornet/nn/batchnorm.py": ["tests/nn/test_calibrate.py"],

    # nn: the layers, their forward-plan families and the cost model
    "tensornet/nn/cost.py": ["tests/nn/test_cost.py", "tests/nn/test_cost_values.py"],
    "tensornet/nn/functional.py": ["tests/nn/test_functional.py", "tests/nn/test_plans.py"],
    "tensornet/nn/staging.py": ["tests/nn/test_staging.py", "tests/nn/test_functional.py"],
    "tensornet/nn/plans.py": [
        "tests/nn/test_plans.py", "tests/nn/test_functional.py", "tests/nn/test_layout.py",
    ],  # fmt: skip
    "tensornet/nn/layout.py": ["tests/nn/test_layout.py"],
    "tensornet/nn/fold.py": ["tests/nn/test_fold.py"],
    "tensornet/nn/geometry.py": [
        "tests/nn/test_plans.py", "tests/nn/test_layers_inputs.py",
        "tests/nn/test_grouped.py::test_the_geometry_takes_a_positive_int_of_groups",
    ],  # fmt: skip
    # planning's traced path (_traced_plan) is reached only by tests/nn/test_compile.py, which
    # cannot run under mutmut: Dynamo does not trace its trampoline (ContextVar.get)
    "tensornet/nn/planning.py": [
        "tests/nn/test_planning.py", "tests/nn/test_layers_inputs.py", "tests/nn/test_layout.py",
    ],  # fmt: skip
    "tensornet/nn/layers.py": [
        "tests/nn/test_layers_values.py", "tests/nn/test_layers_inputs.py",
        "tests/nn/test_layers.py",
        *(f"tests/nn/test_grouped.py::test_{t}" for t in (
            "a_layer_built_from_scratch_holds_the_grouped_kernel", "bad_groups_are_refused",
            "numpy_groups_become_a_python_int", "other_formats_are_exact_at_full_rank_too",
            "to_conv_gives_a_grouped_conv_with_the_same_outputs",
        )),
    ],  # fmt: skip

    # nn: the forward plans of grouped and depthwise convs
    "tensornet/nn/grouped_plans.py": ["tests/nn/test_grouped.py"],

    # nn: compress and its report, allocate and its searches
    # compress: test_model.py's compress tests only (its training, export and allocation
    # tests cost half a minute a mutant and test other modules)
    "tensornet/nn/compress.py": [
        "tests/nn/test_compress.py", "tests/nn/test_compress_steps.py",
        "tests/nn/test_compress_details.py",
        *(f"tests/nn/test_model.py::test_{t}" for t in (
            "compress_resnet20_report_and_original_untouched",
            "mixed_formats_and_inplace",
            "failed_compress_leaves_the_model_unchanged",
            "save_load_round_trip_is_exact",
        )),
        *(f"tests/nn/test_whiten.py::test_compress_with_data_{t}" for t in (
            "fits_the_dense_outputs_and_the_model_saves", "leaves_large_layers_plain",
            "keeps_plans_options_and_shared_layers",
        )),
        "tests/nn/test_grouped.py::test_compress_by_default_keeps_depthwise_convs_dense",
        *(f"tests/nn/test_tensorized_layers.py::test_compress_{t}" for t in (
            "takes_dims_per_layer_and_balanced", "refuses_a_bad_tensorize",
            "tensorize_with_an_allocation_is_refused",
            "tensorize_leaves_given_dims_dense_layers_and_prime_sizes_alone",
            "tensorize_keeps_a_layers_own_half_given_dims",
        )),
    ],  # fmt: skip
    "tensornet/nn/report.py": ["tests/nn/test_compress.py", "tests/nn/test_compress_steps.py"],
    "tensornet/nn/measure.py": [
        "tests/nn/test_measure.py", "tests/nn/test_compress.py", "tests/nn/test_compress_steps.py",
        "tests/nn/test_grouped.py::test_dense_seconds_prices_a_grouped_conv_as_its_grouped_plan",
    ],
    # allocate: test_allocate.py without its trained ResNet/VGG tests (test_allocate_totals.py
    # checks the same on small models), so that a mutant costs seconds, not a minute
    "tensornet/nn/allocate.py": [
        "tests/nn/test_allocate_totals.py", "tests/nn/test_allocate_steps.py",
        *(f"tests/nn/test_allocate.py::test_{t}" for t in (
            "budgets_of_every_number_type_give_the_same_allocation",
            "bad_arguments_are_refused_naming_the_field",
            "accepted_edge_arguments",
            "uniform_and_energy_compute_only_single_group_spectra",
            "progress_bars_only_when_asked",
            "allocation_prints_true_errors_and_running_plans",
            "linear_layers_are_priced_by_their_plans",
            "zero_and_rank_deficient_kernels",
            "infeasible_flop_budget_explains_dense_plans",
        )),
        *(f"tests/nn/test_allocate_auto.py::test_{t}" for t in (
            "auto_arguments_are_checked", "an_errors_function_replaces_the_weight_errors",
            "weights_and_formats_reach_the_choice",
            "the_choice_of_allocate_is_optimal_over_its_frontiers",
            "auto_applied_by_compress_rebuilds_the_chosen_formats_and_errors",
            "budgets_are_met_within_one_percent_in_every_measure",
            "reuse_chooses_as_a_fresh_allocation_at_each_budget",
            "reuse_is_checked_before_any_work",
            "auto_messages_history_progress_and_choice_fields",
            "auto_picks_the_format_a_kernel_is_exactly_in",
        )),
    ],  # fmt: skip
    "tensornet/nn/allocation.py": [
        "tests/nn/test_allocate_totals.py", "tests/nn/test_allocate_auto.py",
        "tests/nn/test_allocate_steps.py",
        "tests/nn/test_allocate.py::test_allocation_prints_true_errors_and_running_plans",
    ],  # fmt: skip
    # alloc_layer: the fast tests that reach it (all of test_allocate.py takes a minute a mutant)
    "tensornet/nn/alloc_layer.py": [
        "tests/nn/test_alloc_layer.py", "tests/nn/test_allocate_steps.py",
        *(f"tests/nn/test_allocate.py::test_{t}" for t in (
            "spectral_and_frobenius_errors_equal_the_dense_ones_for_every_j_and_k",
            "rank_for_is_the_smallest_rank_meeting_the_threshold",
            "dense_seconds_price_one_conv_step",
            "costs_rank_search_and_dense_rule_on_priced_layers",
            "linear_layers_are_priced_by_their_plans",
            "zero_and_rank_deficient_kernels",
        )),
    ],  # fmt: skip
    "tensornet/nn/alloc_search.py": ["tests/nn/test_allocate_steps.py"],
    # allocate auto: the global choice (pure), the candidates, their prices and frontiers
    "tensornet/nn/frontier.py": ["tests/nn/test_frontier.py"],
    "tensornet/nn/alloc_candidates.py": [
        "tests/nn/test_alloc_candidates.py",
        "tests/nn/test_alloc_data_bounds.py::test_weight_candidates_are_the_same_without_shared_steps",
        *(f"tests/nn/test_allocate_auto.py::test_{t}" for t in (
            "family_frontiers_and_thinning", "auto_picks_the_format_a_kernel_is_exactly_in",
        )),
    ],  # fmt: skip
    "tensornet/nn/alloc_data.py": [
        "tests/nn/test_alloc_data.py", "tests/nn/test_alloc_data_bounds.py",
    ],
    "tensornet/nn/alloc_auto.py": [
        *(f"tests/nn/test_allocate_auto.py::test_{t}" for t in (
            "family_frontiers_and_thinning", "auto_arguments_are_checked",
            "prices_without_an_input_and_checked_formats",
            "unnamed_layers_weigh_one_and_dense_choices_have_no_error",
            "layer_frontier_passes_max_groups_and_defaults_as_allocate",
            "prices_are_the_cost_models_choice_on_the_layers_device",
            "the_frontier_of_a_layer_prices_its_candidates_by_the_plan_they_run",
            "an_errors_function_replaces_the_weight_errors",
            "weights_and_formats_reach_the_choice",
            "the_choice_of_allocate_is_optimal_over_its_frontiers",
            "auto_applied_by_compress_rebuilds_the_chosen_formats_and_errors",
            "budgets_are_met_within_one_percent_in_every_measure",
        )),
    ],  # fmt: skip
    "tensornet/plot_alloc.py": ["tests/test_plot_alloc.py"],

    # nn: the default format, kernel truncation, back to plain torch
    "tensornet/nn/defaults.py": [
        "tests/nn/test_defaults.py",
        "tests/nn/test_grouped.py::test_compress_by_default_keeps_depthwise_convs_dense",
    ],
    "tensornet/nn/truncate.py": [
        "tests/nn/test_truncate.py", "tests/nn/test_layers_inputs.py", "tests/nn/test_model.py",
    ],
    "tensornet/nn/export.py": ["tests/nn/test_export.py", "tests/nn/test_model.py"],

    # nn: data-aware errors and factors (input covariances, whitened decompositions)
    "tensornet/nn/covariance.py": ["tests/nn/test_covariance.py", "tests/nn/test_whiten.py"],
    "tensornet/nn/whiten.py": [
        "tests/nn/test_whiten.py", "tests/nn/test_covariance.py",
        "tests/nn/test_alloc_data_bounds.py",
    ],

    # nn: the layer kinds and the 1-d, 3-d and transposed convs
    "tensornet/nn/kinds.py": ["tests/nn/test_kinds.py"],
    "tensornet/nn/geometry_nd.py": [
        "tests/nn/test_conv_nd_details.py", "tests/nn/test_conv1d3d.py",
        "tests/nn/test_conv_transpose.py",
    ],
    "tensornet/nn/plans_nd.py": [
        "tests/nn/test_conv_nd_details.py", "tests/nn/test_conv_transpose.py",
        "tests/nn/test_conv1d3d.py",
    ],
    "tensornet/nn/convnd.py": [
        "tests/nn/test_conv_nd_details.py", "tests/nn/test_conv1d3d.py", "tests/nn/test_kinds.py",
    ],
    "tensornet/nn/conv_transpose.py": [
        "tests/nn/test_conv_transpose.py", "tests/nn/test_conv_nd_details.py",
        "tests/nn/test_kinds.py",
    ],
    "tensornet/nn/export_nd.py": [
        "tests/nn/test_conv_nd_details.py", "tests/nn/test_conv1d3d.py",
        "tests/nn/test_conv_transpose.py",
    ],  # fmt: skip

    # studies: the verdict code (findings from the run's tables) and its statistics
    "studies/verdicts/truncation.py": ["tests/studies/test_truncation_verdicts.py"],
    "studies/verdicts/alds.py": ["tests/studies/test_verdicts_alds.py"],
    "studies/alds_report.py": ["tests/studies/test_alds_report.py"],
    # alds_cells: the cell and context tests (the end-to-end quick run costs a minute a mutant)
    "studies/alds_cells.py": [
        *(f"tests/studies/test_alds.py::test_{t}" for t in (
            "run_cell_records_the_allocation_the_scores_and_the_retraining",
            "auto_cells_reuse_the_candidates_and_choose_as_a_fresh_allocation",
            "calibration_batches_and_recalibrated_scores",
            "cells_pass_the_studys_settings_to_allocate_compress_and_train",
            "cells_without_recalibration_or_retraining",
            "grouped_formula_and_map_cells",
        )),
    ],  # fmt: skip
    "studies/common/calibration.py": [
        "tests/studies/test_calibration.py",
        "tests/studies/test_approx_error.py::test_cells_of_a_batchnorm_model_are_scored_after_"
        "recalibration",
    ],
    "studies/verdicts/hybrid.py": ["tests/studies/test_verdicts_hybrid.py"],
    "studies/verdicts/approx_error.py": ["tests/studies/test_verdicts_approx_error.py"],
    "studies/common/stats.py": [
        "tests/studies/test_stats.py", "tests/studies/test_stats_values.py",
        "tests/studies/test_units.py",
    ],  # fmt: skip
    "studies/common/units.py": ["tests/studies/test_units.py"],

    # studies: shared machinery (progress, the validation split, argument checks, training)
    "studies/common/progress.py": ["tests/studies/test_progress.py"],
    "studies/common/data.py": ["tests/studies/test_val_size.py", "tests/studies/test_data.py"],
    "studies/common/cli.py": [
        "tests/studies/test_run_arguments.py", "tests/studies/test_val_size.py",
        "tests/studies/test_runner.py",
    ],  # fmt: skip
    "studies/common/training.py": [
        "tests/studies/test_progress.py", "tests/studies/test_training.py",
    ],  # fmt: skip
    "studies/common/study.py": ["tests/studies/test_val_size.py", "tests/studies/test_data.py"],

    # spectra: dense kernels, compressed kernels through their networks, and their plots
    "tensornet/formats/cuts.py": ["tests/test_spectra_compressed.py"],
    "tensornet/spectra.py": [
        "tests/test_spectra.py", "tests/test_spectra_shared.py", "tests/test_spectra_compressed.py",
        "tests/test_bad_inputs.py", "tests/test_spectra_tables.py",
    ],
    "tensornet/plot.py": ["tests/test_plot.py", "tests/test_spectra_compressed.py"],
}
MODULES = list(TESTS)


def equivalents() -> dict[str, str]:
    """Documented equivalent mutants: name -> why."""
    out = {}
    for listing in sorted(EQUIVALENT.glob("*.txt")):
        for line in listing.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, why = line.partition("#")
                out[name.strip()] = why.strip()
    return out


def scratch_dir(module: str) -> Path:
    return SCRATCH / module.replace("/", "_").removesuffix(".py")


def tracked_files() -> list[str]:
    """Tracked and untracked, not ignored files of the working tree."""
    return subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip


def write_config(dest: Path, module: str, files: list[str]) -> None:
    """The project's pyproject.toml plus a [tool.mutmut] section for `module` and its tests."""
    package = module.split("/")[0]
    others = sorted({f.split("/")[0] for f in files if "/" in f} - {package, "tests"})
    config = (
        "\n\n[tool.mutmut]\n"
        f'source_paths = ["{package}"]\n'
        f'only_mutate = ["{module}"]\n'
        f"also_copy = {others!r}\n".replace("'", '"')
        + f"pytest_add_cli_args_test_selection = {TESTS[module]!r}\n".replace("'", '"')
        + 'pytest_add_cli_args = ["-x", "-q", "-p", "no:cacheprovider"]\n'
    )
    (dest / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + config)


def scratch_copy(module: str) -> Path:
    """The working tree copied to a fresh scratch folder, configured for `module`."""
    dest = scratch_dir(module)
    shutil.rmtree(dest, ignore_errors=True)
    files = tracked_files()
    for rel in files:
        src = ROOT / rel
        if src.is_file() and not rel.startswith(".mutate/"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    write_config(dest, module, files)
    return dest


def refresh_tests(module: str) -> Path:
    """An earlier scratch folder with today's tests and test selection (the mutants are kept)."""
    dest = scratch_dir(module)
    files = tracked_files()
    for rel in files:
        if rel.startswith("tests/"):
            for base in (dest, dest / "mutants"):
                (base / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, base / rel)
    write_config(dest, module, files)
    return dest


def previous_survivors(where: Path) -> list[str]:
    listing = where / "survivors.txt"
    if not listing.exists():
        return []
    return [w[:-1] for w in listing.read_text().split() if w.endswith(":")]


def mutate(
    module: str, jobs: int, known: dict[str, str], mode: str, only: list[str] | None = None
) -> dict[str, int | float]:
    """Run (``mode="fresh"``), continue (``"resume"``) or rerun the survivors (``"survivors"``).

    With ``only`` (fnmatch patterns of mutant names), just those mutants are run and counted.
    """
    where = scratch_dir(module)
    names: list[str] = []
    if mode == "survivors" and (where / "mutants").exists():
        names = previous_survivors(where)
        refresh_tests(module)
        # which tests reach which function is recollected: an edited test may reach new ones
        (where / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    elif not (mode == "resume" and (where / "mutants").exists()):
        scratch_copy(module)
    env = {
        **os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "TENSORNET_HYPOTHESIS_PROFILE": "mutate",
    }  # fmt: skip
    mutmut = [sys.executable, "-m", "mutmut"]
    # A changed test selection makes mutmut forget earlier verdicts ("not checked"); the plain
    # run after the survivors' rerun checks those again.
    runs = [only] if only else ([names] if names else []) + [[]]
    for run in runs:
        subprocess.run(
            [*mutmut, "run", "--max-children", str(jobs), *run], cwd=where, env=env,
            stdout=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    listing = subprocess.run(
        [*mutmut, "results", "--all", "true"], cwd=where, env=env, capture_output=True, text=True
    ).stdout
    status = dict(re.findall(r"^\s+(\S+): (.+)$", listing, re.M))
    if only:
        status = {n: s for n, s in status.items() if any(fnmatch.fnmatch(n, p) for p in only)}
    counts: dict[str, int | float] = {"mutants": len(status)}
    for key in ("killed", "timeout", "survived", "no tests"):
        counts[key] = sum(1 for s in status.values() if s == key)
    equivalent = [n for n in status if n in known and status[n] != "killed"]
    counts["equivalent"] = len(equivalent)
    killed = counts["killed"] + counts["timeout"]
    counted = counts["mutants"] - len(equivalent)
    counts["score"] = 100.0 * killed / counted if counted else float("nan")
    survivors = [
        f"{n}: {s}" for n, s in sorted(status.items())
        if s not in ("killed", "timeout") and n not in known
    ]  # fmt: skip
    (where / "survivors.txt").write_text("\n".join(survivors) + "\n")
    write_diffs(where, [line.partition(":")[0] for line in survivors])
    return counts


DIFFS = """
import sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
with open("survivors.diff", "w") as out:
    for name in sys.argv[1:]:
        out.write(f"# {name}\\n{get_diff_for_mutant(name)}\\n\\n")
"""


def write_diffs(where: Path, names: list[str]) -> None:
    """``survivors.diff``: every survivor's diff, for reading without one ``mutmut show`` each."""
    subprocess.run([sys.executable, "-c", DIFFS, *names], cwd=where, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/mutate.py", description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", help=f"default: all {len(MODULES)} modules")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument(
        "--resume", action="store_true",
        help="continue an interrupted run of each module instead of starting afresh",
    )  # fmt: skip
    parser.add_argument(
        "--survivors", action="store_true",
        help="rerun only the last run's survivors, against today's tests (after adding tests)",
    )  # fmt: skip
    parser.add_argument(
        "--only", action="append", metavar="PATTERN",
        help="run and score only the mutants whose names match (fnmatch; may be repeated)",
    )  # fmt: skip
    parser.add_argument(
        "--diffs-only", action="store_true",
        help="rewrite survivors.diff of earlier runs without running anything",
    )  # fmt: skip
    args = parser.parse_args(argv)
    modules = args.modules or MODULES
    unknown = [m for m in modules if m not in TESTS]
    if unknown:
        parser.error(f"no test files known for {unknown}; add them to TESTS in tools/mutate.py")
    known = equivalents()
    if args.diffs_only:
        for module in modules:
            where = scratch_dir(module)
            write_diffs(where, previous_survivors(where))
        return 0
    print(f"{'module':34s} {'mutants':>7s} {'killed':>6s} {'surv.':>5s} {'no t.':>5s} "
          f"{'equiv':>5s} {'score':>6s}", flush=True)  # fmt: skip
    for module in modules:
        mode = "survivors" if args.survivors else "resume" if args.resume else "fresh"
        c = mutate(module, args.jobs, known, mode, args.only)
        print(
            f"{module:34s} {c['mutants']:7d} {c['killed'] + c['timeout']:6d} {c['survived']:5d} "
            f"{c['no tests']:5d} {c['equivalent']:5d} {c['score']:5.1f}%",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""notebooks/ablations/finetune_epochs.py and the fine-tuning cache it shares with notebook 10 (issue 15)."""
import json
import pytest
import torch
from ablation_scripts import load_ablation, tiny_quick_course


def test_plateau_epochs_is_the_first_epoch_at_twice_chance():
    plateau_epochs = load_ablation("finetune_epochs").plateau_epochs
    curve = [{"epoch": 1, "acc": 0.11}, {"epoch": 2, "acc": 0.2499}, {"epoch": 3, "acc": 0.25}, {"epoch": 4, "acc": 0.2}]
    assert plateau_epochs(curve, chance=0.125) == 3
    assert plateau_epochs(curve[:2], chance=0.125) is None


def test_the_recipe_and_its_cache_folder(tmp_path):
    from course_lib.course import FINETUNE_EPOCHS, budget, finetune_config, finetune_folder, weights_id
    from course_lib.models import create_model

    base = budget("full")
    ft = finetune_config(base, "full")
    assert (ft.epochs, ft.lr, ft.warmup_epochs, ft.batch_size, ft.clip_len) == (10, 1e-3, 0, base.batch_size, 16)
    assert finetune_config(budget("test"), "test").epochs == FINETUNE_EPOCHS["test"] < 10
    assert finetune_config(base, "full", epochs=30).epochs == 30

    torch.manual_seed(0)
    bb = create_model("r3d_vcop", width=0.25)
    ident = weights_id(bb)
    assert len(ident) == 10 and weights_id(bb) == ident
    # notebook 10's folder name (a cache written before the helper existed keeps working)
    assert finetune_folder(tmp_path, "random init", bb) == tmp_path / "finetune" / f"random_init-{ident}-crop"
    assert finetune_folder(tmp_path, "random init", bb, 30).name == f"random_init-{ident}-crop-30ep"
    assert finetune_folder(tmp_path, "random init", bb, 30, flip=False).name == f"random_init-{ident}-crop-noflip-30ep"
    with torch.no_grad():
        next(bb.parameters()).add_(1e-3)  # other weights, another run
    assert weights_id(bb) != ident


def test_finetune_epochs_rows_runs_and_resume(tmp_path, monkeypatch):
    from course_lib.data import course_dataset
    module = load_ablation("finetune_epochs")

    tiny_quick_course(monkeypatch, tmp_path / "data")
    out = tmp_path / "rows.json"
    args = ["--out", str(out), "--starts", "random_init", "--epochs", "2", "--random-seeds"]
    rows = module.main(args)
    assert list(rows) == ["random init, 2 epochs"]
    row = rows["random init, 2 epochs"]
    folder = tmp_path / "data" / "runs" / "test" / "10" / "finetune" / row["folder"]
    assert row["folder"].startswith("random_init-") and row["folder"].endswith("-crop-noflip-2ep")  # beside notebook 10's
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert row["train_loss"] == [round(m["loss"], 3) for m in metrics if "acc" in m]
    assert row["reaches_twice_chance_at_epoch"] == module.plateau_epochs(metrics, 1 / len(course_dataset().classes))
    assert row["train_acc_last_epoch"] == pytest.approx(100 * metrics[-1]["acc"])

    # a second call resumes from the file: nothing is fine-tuned again
    monkeypatch.setattr(module, "finetune", lambda *a, **k: pytest.fail("fine-tuned a row the file holds"))
    assert module.main(args) == rows == json.loads(out.read_text())

    with pytest.raises(SystemExit):
        module.main(["--out", str(out), "--starts", "nope"])

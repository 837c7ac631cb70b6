"""``python -m autograder assemble``: do one student's own pieces, and only theirs, make a GPT that learns and writes?

Chapter points test each piece against known-good earlier pieces. The assembly score is the one place a student's
chapters are combined: their tokenizer, attention, MLP, blocks, model, training step and ``generate`` (no
fallbacks), trained briefly on the course corpus in the sandbox (:mod:`autograder.assembly_child`). It passes when
the validation loss falls below :data:`LOSS_FRACTION` of the untrained loss, ln(vocabulary), and the generated
tokens are valid ids that decode to text. The child runs the student's code, so the grader does not take its word
for the loss: it loads the trained weights and tokenizer the child saved (data: safetensors, vocab.json,
merges.txt) into the course's reference GPT and measures the validation loss itself
(:mod:`autograder.assembly_judge`). Reported separately from chapter points.

When the student submitted chapter 6b, the assembly has a second, independent result, the **application**: the
shipped ``course-tiny`` checkpoint, loaded and fine-tuned on question answering by the student's own pieces
(chapters 3, 4a-5b and 6b), is measured by the grader on the saved weights: its loss on the answers of held-out
questions (it passes when that falls below :data:`APPLICATION_LOSS_FRACTION` of the checkpoint's own loss before
fine-tuning), and, as the reported score, the token F1 of its greedy answers (the grader's ``generate`` and
SQuAD's rules). A short fine-tuning of a 137,000-parameter model learns the answers' form long before it answers
well, so the F1 is reported, not a pass mark.

When the student submitted chapter 4e, a third result, **modern**: the student's ``ModernGPT`` (RMSNorm, RoPE,
SwiGLU, grouped-query attention) is trained by the same chapter-5b pieces on the same text (tokenized by the
shipped course-tiny tokenizer) and writes with their ``generate``; their ``save_pretrained`` writes it in Hugging
Face's Llama format. The grader loads those weights strictly into a ``LlamaForCausalLM`` it configures itself and
measures the validation loss; the same pass mark as the assembly (:data:`LOSS_FRACTION` of ln(vocabulary)), and
the student's own measurement of their model must agree with the grader's (:data:`MODERN_AGREEMENT`): a model that
trains well but is not Llama's function of its weights fails.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autograder.course import CommandError
from autograder.grading import Grader, Settings, die_with_parent, now
from autograder.results import AssemblyResult, check_student_id
from autograder.sandbox import SandboxUnavailable, grader_files
from llmcourse import registry

#: Chapters whose pieces the assembled model is made of.
REQUIRED = ("03_tokens_and_positions", "04a_attention", "04b_multi_head_attention", "04c_feed_forward",
            "04d_residual_and_layernorm", "05a_gpt", "05b_training")
GENERATION = "05c_generation"
#: Pass mark: the validation loss after training, as a fraction of ln(vocab), the loss of a uniform guess.
LOSS_FRACTION = 0.6
#: The application stage: the chapters it uses besides REQUIRED (6a only if submitted: 6b's exports may use it).
APPLICATION, APPLICATION_OPTIONAL = "06b_applications", ("06a_metrics",)
#: Its pass mark: the loss per answer token on held-out questions after fine-tuning, as a fraction of the
#: checkpoint's before (the reference pieces reach about a fifth; a loop that never steps stays at 1).
APPLICATION_LOSS_FRACTION = 0.5
#: The modern stage's chapter: its ModernGPT, trained and run by the student's chapters 3, 5b and 5c.
MODERN = "04e_modern_block"
#: The ModernGPT is a Llama: the student's own validation loss and the grader's, of HF's LlamaForCausalLM on the
#: same weights and text, must agree to this many nats per token (they agree to 1e-6 for the reference pieces; a
#: RoPE with GPT-J's pairing instead of Llama's trains as well and disagrees by 0.3).
MODERN_AGREEMENT = 0.05
#: The assembly's optional stages, each with a result of its own in the child's report and the grader's: the
#: chapter whose submission turns the stage on, and the chapters it uses besides REQUIRED (when submitted).
STAGES = {"application": (APPLICATION, (*APPLICATION_OPTIONAL, APPLICATION)), "modern": (MODERN, (MODERN,))}


def required_chapters(root: Path) -> list[str]:
    """The chapters the assembly needs, among those the course has (it grows with the course)."""
    present = set(registry.chapters_in(root / "solutions"))
    return [c for c in (*REQUIRED, GENERATION) if c in present]


def judge(student: str, report: dict, seconds: float) -> AssemblyResult:
    """The verdict on the child's plain-JSON report (untrusted: every field is checked)."""
    losses = [x for x in report.get("losses", []) if isinstance(x, (int, float))]
    vocab = report.get("vocab_size")
    bound = LOSS_FRACTION * math.log(vocab) if isinstance(vocab, int) and vocab > 1 else 0.0
    base = dict(student=student, losses=[float(x) for x in losses][:1000], loss_bound=round(bound, 4),
                duration_s=round(seconds, 1), graded_at=now())
    if report.get("error"):
        status = "error" if report.get("grader_failed") else "failed"
        return AssemblyResult(status=status, score=0.0, message=str(report["error"])[:800], **base)
    if not bound:
        return AssemblyResult(status="failed", score=0.0, message=f"no usable vocabulary size: {vocab!r}", **base)
    val = report.get("val_loss")
    if not isinstance(val, (int, float)) or not math.isfinite(val):
        return AssemblyResult(status="failed", score=0.0, message=f"the validation loss is {val!r}", **base)
    ids = report.get("generated_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and 0 <= i < vocab for i in ids):
        return AssemblyResult(status="failed", score=0.0, message="generate returned invalid token ids", **base)
    sample = str(report.get("sample", ""))[:500]
    claimed = report.get("claimed_val_loss")
    note = ""
    if isinstance(claimed, (int, float)) and math.isfinite(claimed) and abs(claimed - val) > 0.1:
        note = f"; the student's own code reported {claimed:.3f}, the grader measured this on the saved weights"
    if val > bound:
        return AssemblyResult(status="failed", score=0.0, sample=sample,
                              message=f"the model did not learn enough: validation loss {val:.3f} nats/token, "
                                      f"above the bound {bound:.3f} ({LOSS_FRACTION} x ln {vocab}){note}", **base)
    return AssemblyResult(status="passed", score=1.0, sample=sample,
                          message=f"validation loss {val:.3f} nats/token (bound {bound:.3f}){note}", **base)


def judge_application(result: AssemblyResult, report: dict) -> AssemblyResult:
    """Fill in the application stage's verdict from the trusted report (``report["application"]``: the child's
    losses and error, the grader's own ``f1`` and ``exact_match``)."""
    from autograder.assembly_child import APP_TASK

    app = report.get("application")
    if not isinstance(app, dict):
        return result
    result.application_task = APP_TASK
    if app.get("error"):
        result.application_status = "error" if app.get("grader_failed") else "failed"
        result.application_message = str(app["error"])[:800]
        return result
    loss, before, f1, em = (app.get(k) for k in ("loss", "loss_before", "f1", "exact_match"))
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in (loss, before, f1, em)):
        result.application_status, result.application_message = "failed", "no score for the fine-tuned model"
        return result
    bound = APPLICATION_LOSS_FRACTION * before
    result.application_bound = round(bound, 4)
    result.application_score, result.application_exact_match = round(float(f1), 4), round(float(em), 4)
    examples = "; ".join(f"{e.get('target', '')!r} -> {e.get('answer', '')!r}" for e in app.get("examples", [])
                         if isinstance(e, dict))
    result.application_status = "passed" if loss <= bound else "failed"
    result.application_message = (
        f"{APP_TASK}, the course-tiny checkpoint fine-tuned by your pieces: loss on held-out answers {loss:.3f} "
        f"nats/token, {before:.3f} before fine-tuning (to pass, at most {bound:.3f}); token F1 {f1:.3f}, exact "
        f"match {em:.3f}; correct -> yours: {examples}")[:800]
    return result


def measure(out: Path, job: Path, timeout: int = 600) -> dict:
    """The grader's own measurement of the trained model in ``out`` (:mod:`autograder.assembly_judge`), in a
    process of its own with every chapter on its public fallback, started in an empty folder."""
    empty = job / "judge"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCOURSE_")}
    env.update(LLMCOURSE_FALLBACK="all", LLMCOURSE_SOURCE=str(empty), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "autograder.assembly_judge", str(out)], cwd=empty, env=env,
                          capture_output=True, text=True, timeout=timeout)
    try:
        found = json.loads(proc.stdout.strip().splitlines()[-1])
        return found if isinstance(found, dict) else {"error": "the measurement said nothing", "grader_failed": True}
    except (ValueError, IndexError):
        return {"error": f"the measurement failed: {proc.stderr.strip()[-300:]}", "grader_failed": True}


def trusted_report(report: dict, out: Path, job: Path) -> dict:
    """The child's report with what decides the verdicts replaced by the grader's own measurement: the validation
    loss, the vocabulary size and the decoded sample. What the child claimed is kept as ``claimed_val_loss``; the
    ``application`` and ``modern`` stages are replaced by :func:`trusted_stage`."""
    stages = [k for k in STAGES if isinstance(report.get(k), dict) and not report[k].get("error")]
    measured = {} if report.get("error") and not stages else measure(out, job)
    for key in STAGES:
        if key in report:
            report = {**report, key: trusted_stage(report, measured, key)}
    if report.get("error"):
        return report
    trusted = {**report, "claimed_val_loss": report.get("val_loss")}
    if measured.get("error"):
        trusted["error"] = measured["error"]
        trusted["grader_failed"] = bool(measured.get("grader_failed"))
        return trusted
    trusted.update(val_loss=measured["val_loss"], vocab_size=measured["vocab_size"],
                   sample=measured.get("sample", ""))
    return trusted


def trusted_stage(report: dict, measured: dict, key: str) -> dict | None:
    """One optional stage's trusted result: the child's error if the stage failed there, else the grader's own
    measurement, with what the child said beside it (its training losses, generated ids and ``claimed_val_loss``),
    which a verdict may check or show but never takes for the grader's."""
    child = report.get(key)
    if not isinstance(child, dict):
        return None
    if child.get("error"):
        return {"error": str(child["error"])[:800]}
    found = measured.get(key)
    if not isinstance(found, dict):
        return {"error": f"the grader could not measure the {key} stage's model", "grader_failed": True}
    if found.get("error"):
        return found
    return {**found, "losses": child.get("losses"), "generated_ids": child.get("generated_ids"),
            "claimed_val_loss": child.get("val_loss")}


def judge_modern(result: AssemblyResult, report: dict) -> AssemblyResult:
    """Fill in the modern stage's verdict from the trusted report (``report["modern"]``, see :func:`trusted_stage`):
    it passes when the grader's validation loss is at most LOSS_FRACTION x ln(vocabulary), the student's own
    estimate of it agrees within MODERN_AGREEMENT, and ``generate`` returned valid token ids."""
    found = report.get("modern")
    if not isinstance(found, dict):
        return result
    if found.get("error"):
        result.modern_status = "error" if found.get("grader_failed") else "failed"
        result.modern_message = str(found["error"])[:800]
        return result
    losses = found.get("losses")
    result.modern_losses = [float(x) for x in losses[:1000] if isinstance(x, (int, float))] \
        if isinstance(losses, list) else []
    val, vocab, ids = found.get("val_loss"), found.get("vocab_size"), found.get("generated_ids")
    if not isinstance(vocab, int) or vocab < 2 or not isinstance(val, (int, float)) or not math.isfinite(val):
        result.modern_status, result.modern_message = "failed", f"no usable measurement: validation loss {val!r}"
        return result
    bound = LOSS_FRACTION * math.log(vocab)
    result.modern_val_loss, result.modern_bound = round(float(val), 4), round(bound, 4)
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and 0 <= i < vocab for i in ids):
        result.modern_status, result.modern_message = "failed", "generate returned invalid token ids"
        return result
    result.modern_sample = str(found.get("sample", ""))[:500]
    claimed = found.get("claimed_val_loss")
    agree = isinstance(claimed, (int, float)) and math.isfinite(claimed) and abs(claimed - val) <= MODERN_AGREEMENT
    result.modern_status = "passed" if val <= bound and agree else "failed"
    result.modern_message = (
        f"chapter 4e's ModernGPT, trained by your pieces, saved by your save_pretrained and measured by the grader "
        f"as Hugging Face's LlamaForCausalLM: validation loss {val:.3f} nats/token (to pass, at most {bound:.3f} = "
        f"{LOSS_FRACTION} x ln {vocab})")
    if not agree:
        shown = f"{claimed:.3f}" if isinstance(claimed, (int, float)) else repr(claimed)
        result.modern_message += (
            f"; your own code measured {shown} on the same weights and text: your ModernGPT does not compute what "
            f"Llama computes with its weights (RoPE's pairing, the causal mask, RMSNorm, the weight names), or "
            f"chapter 5b's estimate_loss measures something else (to pass, within {MODERN_AGREEMENT})")
    result.modern_message = result.modern_message[:800]
    return result


def assemble_one(grader: Grader, student: str, slot: int = 0, timeout: int = 900) -> AssemblyResult:
    check_student_id(student)
    started = time.monotonic()
    needed = required_chapters(grader.root)
    missing = [c for c in needed if not grader.layout.submission(student, c).is_file()]
    if missing:
        result = AssemblyResult(student, "incomplete", 0.0, f"no submission for {', '.join(missing)}",
                                graded_at=now())
        grader.store.save_assembly(result)
        return result
    folder = grader.run_folder.path if grader.run_folder else Path(tempfile.gettempdir())
    job = Path(tempfile.mkdtemp(prefix="assemble-", dir=folder))
    try:
        tree = job / "tree"
        course = set(registry.chapters_in(grader.root / "solutions"))

        def submitted(chapter: str) -> bool:
            return chapter in course and grader.layout.submission(student, chapter).is_file()

        ran = [key for key, (chapter, _) in STAGES.items() if submitted(chapter)]
        needed = needed + [c for key in ran for c in STAGES[key][1] if submitted(c)]
        for chapter in needed:  # only the notebooks, never anything else from the submission folder
            target = registry.notebook_path(tree, chapter)
            target.parent.mkdir(parents=True)
            shutil.copyfile(grader.layout.submission(student, chapter), target)
        out = job / "out"
        sandbox = grader.sandboxes.make("assembly", slot, [out], tree, {"LLMCOURSE_SOURCE": str(tree)},
                                        readable=(tree, *grader_files("assembly_child.py")))
        argv = [sys.executable, "-m", "autograder.assembly_child", str(out)]
        argv += ["--with-generation"] if GENERATION in needed else []
        argv += [f"--with-{key}" for key in ran]
        cmd = sandbox.command(argv)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCOURSE_")}
        if not sandbox.enabled:
            env["LLMCOURSE_SOURCE"] = str(tree)
        try:
            subprocess.run(cmd, capture_output=True, timeout=timeout, preexec_fn=die_with_parent, env=env,
                           cwd=tree)
            report = json.loads((out / "assembly.json").read_text(encoding="utf-8")[:1_000_000])
            report = trusted_report(report if isinstance(report, dict) else {}, out, job)
            result = judge_application(judge(student, report, time.monotonic() - started), report)
            result = judge_modern(result, report)
            for key in ran:
                if not getattr(result, f"{key}_status"):  # the child's report left it out
                    setattr(result, f"{key}_status", "failed")
                    setattr(result, f"{key}_message", f"the {key} stage reported nothing")
        except subprocess.TimeoutExpired:
            result = AssemblyResult(student, "timeout", 0.0, f"assembly did not finish within {timeout} s",
                                    graded_at=now())
        except (OSError, ValueError):
            result = AssemblyResult(student, "error", 0.0, "the assembly crashed before reporting (a resource "
                                    "limit, os._exit or a crash)", graded_at=now())
        for key in ran:  # no report at all: the stages share the run's fate
            if not getattr(result, f"{key}_status"):
                setattr(result, f"{key}_status", result.status)
                setattr(result, f"{key}_message", result.message)
    finally:
        shutil.rmtree(job, ignore_errors=True)
    grader.store.save_assembly(result)
    return result


def _assemble_command(args) -> int:
    from tqdm import tqdm

    from autograder.grading import RunFolder

    settings = Settings(insecure=args.insecure, memory_gib=args.memory_gib)
    grader = Grader(Path(args.root), settings)
    try:
        grader.sandboxes.check()
    except SandboxUnavailable as err:
        raise CommandError(f"refusing to assemble: {err}") from None
    students = args.student or grader.students()
    if not students:
        raise CommandError(f"no submissions in {grader.layout.submitted} (run collect first)")
    results = []
    with RunFolder(grader.layout, "assemble") as folder:
        grader.run_folder = folder
        for student in tqdm(students, desc="assembling", unit="student", file=sys.stderr):
            try:
                results.append(assemble_one(grader, student, timeout=args.timeout))
            except ValueError as err:
                raise CommandError(str(err)) from None
    for r in results:
        print(f"{r.student:20s} assembly {r.status:10s} {r.score:g}  {r.message}")
        if r.application_status:
            print(f"{r.student:20s} application ({r.application_task}) {r.application_status:10s} "
                  f"F1 {r.application_score:.3f}  {r.application_message}")
        if r.modern_status:
            print(f"{r.student:20s} modern (4e)  {r.modern_status:10s} {r.modern_message}")
    return 0


def add_command(commands) -> None:
    p = commands.add_parser(
        "assemble", help="train and run a GPT made only of each student's own pieces (the assembly score)",
        description=__doc__.split("\n\n")[1])
    p.add_argument("--student", action="append", default=[], metavar="S", help="only this student (repeatable)")
    p.add_argument("--timeout", type=int, default=900, help="seconds per student")
    p.add_argument("--memory-gib", type=float, default=Settings.memory_gib, help="memory for the sandbox")
    p.add_argument("--insecure", action="store_true", help="run WITHOUT a sandbox (trusted code only)")
    p.add_argument("--root", default=str(registry.COURSE_ROOT), help="the course folder (default: this repository)")
    p.set_defaults(run=_assemble_command)

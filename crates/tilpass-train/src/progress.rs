//! A progress bar for training runs (`indicatif`): step, loss, learning rate, tokens/s and
//! ETA on a terminal; on anything else (CI logs, pipes) a plain line every 5% of the run,
//! held back until the run ends (so that a failed run's cause can come first on stderr) unless
//! `TILPASS_PROGRESS=live`.
//!
//! With the model FLOPs per token and the machine's peak known ([`Progress::set_mfu`],
//! [`train_flops_per_token`], [`peak_gflops`]), the line also shows the MFU: model FLOPs per
//! second over the peak. Without a peak (a device other than Flex and no
//! `TILPASS_PEAK_GFLOPS`) it shows tokens/s only.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::trainer::{Event, Summary};

/// Renders [`Event`]s of a run on stderr. Feed it every event (`on_event`), then `finish`.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    tty: bool,
    total: usize,
    every: usize,
    started: Instant,
    first_step: Option<usize>,
    /// Lines held back (not a terminal, not `TILPASS_PROGRESS=live`).
    held: Option<Vec<String>>,
    /// Model FLOPs per trained token and the peak in FLOP/s, for the MFU.
    mfu: Option<(f64, f64)>,
}

impl Progress {
    /// A bar for a run of `total_steps` optimiser steps, labelled `label` (e.g. `"sft"`).
    pub fn new(label: &str, total_steps: usize) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = ProgressBar::with_draw_target(
            Some(total_steps as u64),
            if tty {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>6} [{bar:28.cyan/blue}] {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        Self {
            bar,
            tty,
            total: total_steps,
            every: (total_steps / 20).max(1),
            started: Instant::now(),
            first_step: None,
            held: (!tty && std::env::var("TILPASS_PROGRESS").as_deref() != Ok("live"))
                .then(Vec::new),
            mfu: None,
        }
    }

    /// Shows the MFU next to tokens/s: `tokens/s × flops_per_token / (peak_gflops × 1e9)`.
    pub fn set_mfu(&mut self, flops_per_token: f64, peak_gflops: f64) {
        if flops_per_token > 0.0 && peak_gflops > 0.0 {
            self.mfu = Some((flops_per_token, peak_gflops * 1e9));
        }
    }

    fn line(&mut self, text: String) {
        if self.tty {
            self.bar.println(text);
        } else if let Some(held) = &mut self.held {
            held.push(text);
        } else {
            eprintln!("{text}");
        }
    }

    /// The lines held back so far (off a terminal), for the caller to print after a failed
    /// run's cause; [`Progress::finish`] prints them on success.
    pub fn take_held(&mut self) -> Vec<String> {
        self.held.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Seconds left, from the pace of the steps run in this process.
    fn eta(&self, step: usize) -> f64 {
        let done = step.saturating_sub(self.first_step.unwrap_or(step).saturating_sub(1));
        self.started.elapsed().as_secs_f64() / done.max(1) as f64
            * self.total.saturating_sub(step) as f64
    }

    /// Updates the display with one event of the run.
    pub fn on_event(&mut self, event: &Event) {
        match event {
            Event::Step(s) => {
                self.first_step.get_or_insert(s.step);
                let mut msg = format!("loss {:.4}  lr {:.2e}", s.loss, s.lr);
                // 0 where nothing measured it (online training sets it after the step).
                if s.tokens_per_s > 0.0 {
                    msg.push_str(&format!("  {:.0} tok/s", s.tokens_per_s));
                    if let Some((per_token, peak)) = self.mfu {
                        let mfu = 100.0 * s.tokens_per_s * per_token / peak;
                        msg.push_str(&format!("  MFU {mfu:.0}%"));
                    }
                }
                // Online training (GRPO / RLOO): the reward and the generation time of the
                // steps that generated a batch.
                if let Some(r) = s.metrics.get("reward") {
                    msg.push_str(&format!("  reward {r:.3}"));
                }
                if let Some(g) = s.metrics.get("time/generation_s") {
                    msg.push_str(&format!("  generation {g:.1}s"));
                }
                self.bar.set_position(s.step as u64);
                self.bar.set_message(msg.clone());
                if !self.tty && (s.step.is_multiple_of(self.every) || s.step == self.total) {
                    let line = format!(
                        "step {}/{}  {msg}  eta {:.0}s",
                        s.step,
                        self.total,
                        self.eta(s.step)
                    );
                    self.line(line);
                }
            }
            Event::Eval(e) if e.metrics.contains_key("eval_rewards/accuracies") => {
                // A preference evaluation: reward accuracy and margin, not a perplexity.
                let m = |k: &str| e.metrics.get(k).copied().unwrap_or(f64::NAN);
                self.line(format!(
                    "eval at step {}: loss {:.4}  reward accuracy {:.3}  margin {:.4}",
                    e.step,
                    e.eval_loss,
                    m("eval_rewards/accuracies"),
                    m("eval_rewards/margins")
                ));
            }
            Event::Eval(e) => {
                self.line(format!(
                    "eval at step {}: loss {:.4}  perplexity {:.2}",
                    e.step, e.eval_loss, e.perplexity
                ));
                for (i, s) in e.samples.iter().enumerate() {
                    self.line(format!("  sample {}: {}", i + 1, s.replace('\n', " ⏎ ")));
                }
            }
            Event::Checkpoint(p) => self.line(format!("checkpoint {}", p.display())),
            Event::EarlyStop { step } => self.line(format!("early stopping at step {step}")),
            Event::Message(m) => self.line(m.to_string()),
            // Row counts of work before the first step (e.g. precomputed reference log-probs)
            // show on the bar; details are for logs.
            Event::Rows { done, seconds } => {
                self.bar
                    .set_message(format!("preparing: {done} rows in {seconds:.0}s"));
            }
            Event::Detail(_) => {}
        }
    }

    /// Clears the bar and prints the lines held back and the run's summary line.
    pub fn finish(&mut self, summary: &Summary) {
        self.bar.finish_and_clear();
        for l in self.take_held() {
            eprintln!("{l}");
        }
        let eval = summary
            .last_eval
            .as_ref()
            .map(|e| {
                format!(
                    ", eval loss {:.4} (perplexity {:.2})",
                    e.eval_loss, e.perplexity
                )
            })
            .unwrap_or_default();
        eprintln!(
            "done: {} steps in {:.1}s, loss {:.4} -> {:.4}{eval}{}",
            summary.steps,
            self.started.elapsed().as_secs_f64(),
            summary.first_loss,
            summary.last_loss,
            if summary.early_stopped {
                " (early stopped)"
            } else {
                ""
            }
        );
    }
}

/// Model FLOPs per trained token of a decoder from its `config.json` (Llama / Mistral / GPT-2
/// keys): with `N` the matmul weights without the embedding (`L·(4h² + 3·h·inter) + h·V` for
/// gated MLPs, `L·(4h² + 2·h·inter) + h·V` for GPT-2's), `6N` for full fine-tuning (forward,
/// backward of activations and of weights) and `4N` for adapters (the frozen weights get no
/// weight gradient; the adapters' own FLOPs and attention's are left out, a few percent at
/// short contexts). `None` when the sizes are not in the config (e.g. an encoder-decoder).
pub fn train_flops_per_token(config: &serde_json::Value, full: bool) -> Option<f64> {
    let get = |keys: &[&str]| keys.iter().find_map(|k| config.get(*k)?.as_f64());
    let h = get(&["hidden_size", "n_embd"])?;
    let l = get(&["num_hidden_layers", "n_layer"])?;
    let v = get(&["vocab_size"])?;
    let gpt2 = config.get("model_type").and_then(|t| t.as_str()) == Some("gpt2");
    let inter = get(&["intermediate_size", "n_inner"]).unwrap_or(4.0 * h);
    let mlp = if gpt2 { 2.0 } else { 3.0 } * h * inter;
    let (heads, kv) = (
        get(&["num_attention_heads", "n_head"]).unwrap_or(1.0),
        get(&["num_key_value_heads"])
            .unwrap_or_else(|| get(&["num_attention_heads", "n_head"]).unwrap_or(1.0)),
    );
    // q and o are h×h; k and v shrink with grouped-query attention.
    let attn = 2.0 * h * h + 2.0 * h * h * kv / heads.max(1.0);
    let n = l * (attn + mlp) + h * v;
    Some(if full { 6.0 } else { 4.0 } * n)
}

/// The machine's f32 peak in GFLOP/s for the MFU: `TILPASS_PEAK_GFLOPS` if set, else on Flex
/// (the CPU backend) measured once per process — the best of 5 `[1024, 1024]` matmuls, ~0.1 s
/// — and cached; `None` on other devices (their line shows tokens/s only).
pub fn peak_gflops(device: &Device) -> Option<f64> {
    if let Some(p) = std::env::var("TILPASS_PEAK_GFLOPS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|p| *p > 0.0)
    {
        return Some(p);
    }
    static MEASURED: OnceLock<f64> = OnceLock::new();
    // Library crates enable no backend, so Flex is recognised by its name (`pool::on_flex`).
    if !tilpass_models::pool::on_flex(device) {
        return None;
    }
    Some(*MEASURED.get_or_init(|| {
        let a = Tensor::<2>::random([1024, 1024], Distribution::Default, device);
        let b = Tensor::<2>::random([1024, 1024], Distribution::Default, device);
        let mut best = f64::INFINITY;
        for i in 0..6 {
            let start = Instant::now();
            let c = a.clone().matmul(b.clone());
            let t = start.elapsed().as_secs_f64();
            drop(c);
            if i > 0 {
                best = best.min(t);
            }
        }
        2.0 * 1024f64.powi(3) / best / 1e9
    }))
}

/// A bar of unknown length on stderr with `template` and `label` as its prefix: drawn on a
/// terminal, hidden otherwise.
fn stderr_bar(label: &str, template: &str) -> (ProgressBar, Option<ProgressStyle>) {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(None, target);
    bar.set_prefix(label.to_string());
    (bar, ProgressStyle::with_template(template).ok())
}

/// A count bar on stderr for the data jobs (`data translate`, `data self-instruct`): call it
/// with `(done, total)`; drawn on a terminal, hidden otherwise. The bar finishes when `done`
/// reaches `total`.
pub fn count_bar(label: &str) -> impl FnMut(usize, usize) {
    let (bar, style) = stderr_bar(
        label,
        "{prefix:>10} [{bar:28.cyan/blue}] {pos}/{len} {per_sec} [{elapsed_precise} < {eta_precise}]",
    );
    if let Some(style) = style {
        bar.set_style(style.progress_chars("=> "));
    }
    move |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        if done >= total {
            bar.finish();
        }
    }
}

/// A row counter on stderr for a pass of unknown length (`data near-dedup`, `data filter`,
/// `data card` reading their input): call it with the rows done so far (redrawn at most a few
/// times a second), then with `None` when the pass ends. Drawn on a terminal, hidden otherwise.
pub fn count_spinner(label: &str) -> impl FnMut(Option<usize>) {
    let (bar, style) = stderr_bar(
        label,
        "{prefix:>10} {spinner} {pos} rows {per_sec} [{elapsed_precise}]",
    );
    if let Some(style) = style {
        bar.set_style(style);
    }
    move |done| match done {
        Some(n) => bar.set_position(n as u64),
        None => bar.finish_and_clear(),
    }
}

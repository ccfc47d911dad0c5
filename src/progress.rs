//! Rendering the trainer's progress (docs/contract.md, "Live progress"): an indicatif bar on a
//! terminal, a plain line every few seconds elsewhere, nothing with `--quiet`. Everything goes
//! to stderr, so stdout keeps only the command's result (and `--json` its one document).

pub use trainctl_core::progress::{latest_in_file, Progress, Tail, ENV};

/// Where a variant's trainer reports progress, relative to the variant dir.
pub const FILE: &str = "logs/progress.jsonl";

use std::cell::{Cell, RefCell};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How progress is shown (`--progress`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Style {
    /// A bar when stderr is a terminal, else plain lines (nothing under `--json` without a
    /// terminal, so a script's captured stderr stays clean).
    Auto,
    Bar,
    Lines,
    Off,
}

/// How often a plain progress line is printed (the first and the last always are).
pub const LINE_EVERY: Duration = Duration::from_secs(10);

/// Draws progress reports as they come; `finish` clears the bar or prints the last line.
pub struct Display {
    style: Style,
    bar: RefCell<Option<indicatif::ProgressBar>>,
    last_line: Cell<Option<Instant>>,
    /// The first report seen and when: the rate and ETA of plain lines count from it (a resumed
    /// run starts at its checkpoint step, not at 0).
    first: Cell<Option<(u64, Instant)>>,
    pending: RefCell<Option<Progress>>,
    label: String,
}

impl Display {
    /// The display for a command: `quiet` wins; `auto` draws a bar on a terminal.
    pub fn new(style: Style, quiet: bool, json: bool, label: &str) -> Display {
        let terminal = std::io::stderr().is_terminal();
        let style = match style {
            _ if quiet => Style::Off,
            Style::Auto if terminal => Style::Bar,
            Style::Auto if json => Style::Off,
            Style::Auto => Style::Lines,
            s => s,
        };
        Display {
            style,
            bar: RefCell::new(None),
            last_line: Cell::new(None),
            first: Cell::new(None),
            pending: RefCell::new(None),
            label: label.to_string(),
        }
    }

    /// A display that shows nothing.
    pub fn off() -> Display {
        Display::new(Style::Off, true, false, "")
    }

    pub fn style(&self) -> Style {
        self.style
    }

    /// Shows one report.
    pub fn show(&self, p: &Progress) {
        if self.first.get().is_none() {
            self.first.set(Some((p.step, Instant::now())));
        }
        match self.style {
            Style::Off | Style::Auto => {}
            Style::Bar => self.draw_bar(p),
            Style::Lines => {
                let due = self
                    .last_line
                    .get()
                    .is_none_or(|t| t.elapsed() >= LINE_EVERY);
                if due {
                    self.last_line.set(Some(Instant::now()));
                    eprintln!("{}", self.line(p));
                    *self.pending.borrow_mut() = None;
                } else {
                    *self.pending.borrow_mut() = Some(p.clone());
                }
            }
        }
    }

    /// Ends the display: the bar is cleared; a plain display prints the last report it held
    /// back, so the final step is always shown.
    pub fn finish(&self) {
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
        if let Some(p) = self.pending.borrow_mut().take() {
            eprintln!("{}", self.line(&p));
        }
    }

    fn draw_bar(&self, p: &Progress) {
        let mut slot = self.bar.borrow_mut();
        let bar = slot.get_or_insert_with(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                p.total,
                indicatif::ProgressDrawTarget::stderr(),
            );
            // Short enough for an 80-column terminal: a wrapped bar redraws as a scroll.
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:24}] {pos}/{len} {rate} eta {eta} {wide_msg}",
            ) {
                let style = style
                    .with_key(
                        "rate",
                        |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                            let _ = write!(w, "{:.0}/s", s.per_sec());
                        },
                    )
                    .progress_chars("=> ");
                bar.set_style(style);
            }
            bar.set_prefix(self.label.clone());
            // A resume starts at its checkpoint: the rate counts from here.
            bar.set_position(p.step);
            bar.reset_eta();
            bar
        });
        if let Some(total) = p.total {
            bar.set_length(total);
        }
        bar.set_position(p.step);
        bar.set_message(details(p));
    }

    /// `train v3: step 120/600 (20%), epoch 3/60, loss 0.1234, macro-f1 0.8100, 35.2 steps/s, eta 14s`
    fn line(&self, p: &Progress) -> String {
        let mut s = format!("{}: step {}", self.label, p.step);
        if let Some(total) = p.total.filter(|t| *t > 0) {
            s += &format!("/{total} ({}%)", p.step.min(total) * 100 / total);
        }
        let d = details(p);
        if !d.is_empty() {
            s += ", ";
            s += &d;
        }
        if let Some((step0, t0)) = self.first.get() {
            let secs = t0.elapsed().as_secs_f64();
            let done = p.step.saturating_sub(step0);
            if done > 0 && secs > 0.0 {
                let rate = done as f64 / secs;
                s += &format!(", {rate:.1} steps/s");
                if let Some(total) = p.total {
                    let left = total.saturating_sub(p.step) as f64 / rate;
                    s += &format!(", eta {}s", left.round() as u64);
                }
            }
        }
        s
    }
}

/// `epoch 3/60, loss 0.1234, macro-f1 0.8100` (what the report has of it).
fn details(p: &Progress) -> String {
    let mut parts = Vec::new();
    match (p.epoch, p.epochs) {
        (Some(e), Some(n)) => parts.push(format!("epoch {}/{n}", (e + 1).min(n))),
        (Some(e), None) => parts.push(format!("epoch {}", e + 1)),
        _ => {}
    }
    if let Some(l) = p.loss.filter(|l| l.is_finite()) {
        parts.push(format!("loss {l:.4}"));
    }
    if let Some(m) = p.metric.filter(|m| m.is_finite()) {
        let name = p.metric_name.as_deref().unwrap_or("metric");
        // A trainer-given name is shown, never interpreted: keep it printable and short.
        let name: String = name.chars().filter(|c| !c.is_control()).take(40).collect();
        parts.push(format!("{name} {m:.4}"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_step_epoch_loss_and_metric() {
        let d = Display::new(Style::Lines, false, false, "train v3");
        let p = Progress {
            step: 120,
            total: Some(600),
            epoch: Some(11),
            epochs: Some(60),
            loss: Some(0.12345),
            metric: Some(0.81),
            metric_name: Some("macro-f1\u{7}".into()),
        };
        assert_eq!(
            d.line(&p),
            "train v3: step 120/600 (20%), epoch 12/60, loss 0.1235, macro-f1 0.8100"
        );
        let bare = Progress {
            step: 7,
            ..Progress::default()
        };
        assert_eq!(d.line(&bare), "train v3: step 7");
    }

    #[test]
    fn quiet_wins_and_auto_without_a_terminal_under_json_is_off() {
        assert_eq!(
            Display::new(Style::Bar, true, false, "x").style(),
            Style::Off
        );
        if !std::io::stderr().is_terminal() {
            assert_eq!(
                Display::new(Style::Auto, false, true, "x").style(),
                Style::Off
            );
            assert_eq!(
                Display::new(Style::Auto, false, false, "x").style(),
                Style::Lines
            );
        }
    }
}

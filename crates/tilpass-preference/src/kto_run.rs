//! `tilpass train kto`: KTO (TRL's `KTOTrainer`) of a decoder on unpaired preference rows with
//! a LoRA adapter (reference: the same model with its adapters disabled) or every weight
//! (`full`; reference: a second copy of the starting model). The settings carry TRL's
//! `KTOConfig` names and defaults (`beta` 0.1, `loss_type` kto, `desirable_weight` /
//! `undesirable_weight` 1.0, `max_length` 1024) and those of `tilpass train dpo` for data,
//! adapter and optimiser (one deviation: the learning rate defaults to 5e-5, not TRL's 1e-6,
//! which barely moves a LoRA adapter).
//!
//! Data, as TRL's `KTOTrainer._prepare_dataset`:
//! - unpaired rows `{"prompt", "completion", "label"}` (text or conversations), or paired rows
//!   `{"prompt"?, "chosen", "rejected"}` (e.g. `builtin:norsk-pref`) unpaired as TRL's
//!   `unpair_preference_dataset` does: per block of 1000 rows (its `map` batch), every chosen
//!   answer (label true) then every rejected one (label false), each with its prompt;
//! - plain-text completions get EOS; prompt and prompt + completion are tokenised as TRL's DPO
//!   does and the completion starts where they diverge; rows whose prompt alone fills
//!   `max_length` are left out; sequences keep their start;
//! - the KL rows pair each prompt with the completion of the row before it in its batch (the
//!   first with the last's): TRL's `add_kl_completion_ids` over blocks of `batch_size` rows.
//!
//! Errors name the row (`file:line`): a row of another format, an empty completion or answer.
//! The `kto` loss needs `batch_size` >= 2 (TRL: "Actual (not effective) batch size must be > 1");
//! a last batch of one row is left out with a warning (TRL would train on it with its own
//! completion as the KL sample). The class-weight warning is TRL's ([`crate::kto_weight_warning`]).

use burn::tensor::Device;
use tilpass_data::{Content, DatasetSpec, Record};
use tilpass_models::DecoderLm;
use tilpass_tokenize::{PreferenceConfig, Truncation, encode_preference};
use tilpass_train::{Event, Target, TrainError};

use crate::dpo_trainer::DpoReference;
use crate::error::Result;
use crate::kto::{KtoConfig, KtoLossType, kl_rotation};
use crate::kto_trainer::{KtoBatch, train_kto};
use crate::orpo_run::PreferenceOutcome;
use crate::pref_run::{
    COMMON_RESUME_SETTINGS, is_empty, load_model, load_rows, preference_run, row_error, save, start,
};

preference_run! {
    /// Settings of a KTO run: the `tilpass train kto` flags, TRL's `KTOConfig` names for the
    /// loss.
    pub struct KtoRun (job = "kto") {
        /// KTO's beta (TRL: 0.1).
        pub beta: f64 = 0.1,
        /// kto (default) or apo_zero_unpaired (no KL term).
        pub loss_type: KtoLossType = KtoLossType::Kto,
        /// Weight λ_D of the desirable examples' losses (TRL: 1.0).
        pub desirable_weight: f64 = 1.0,
        /// Weight λ_U of the undesirable examples' losses (TRL: 1.0).
        pub undesirable_weight: f64 = 1.0,
    }
}

/// TRL's `unpair_preference_dataset` `map` batch (the `datasets` default).
const UNPAIR_BLOCK: usize = 1000;

/// One unpaired row: its index in the data (for errors), prompt, completion and label.
type Unpaired = (usize, Option<Content>, Content, bool);
/// One encoded row: prompt ids, completion ids, label.
type Encoded = (Vec<u32>, Vec<u32>, bool);

/// The unpaired rows of `records` (paired rows unpaired as TRL does), checked; `at[i]` names
/// row `i` in errors.
pub(crate) fn unpaired_rows(records: &[Record], at: &[String]) -> Result<Vec<Unpaired>> {
    let paired = matches!(records.first(), Some(Record::Preference { .. }));
    let mut rows = Vec::with_capacity(records.len() * if paired { 2 } else { 1 });
    let mut blocks: Vec<(Vec<Unpaired>, Vec<Unpaired>)> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        match (paired, r) {
            (
                false,
                Record::Unpaired {
                    prompt,
                    completion,
                    label,
                },
            ) => {
                if is_empty(completion) {
                    return Err(row_error(&at[i], "a non-empty `completion`".into()).into());
                }
                rows.push((i, Some(prompt.clone()), completion.clone(), *label));
            }
            (true, Record::Preference { .. }) => {
                let Record::Preference {
                    prompt,
                    chosen,
                    rejected,
                } = r.clone().with_explicit_prompt()
                else {
                    unreachable!("with_explicit_prompt keeps a preference row one")
                };
                for (side, c) in [("chosen", &chosen), ("rejected", &rejected)] {
                    if is_empty(c) {
                        return Err(
                            row_error(&at[i], format!("a non-empty `{side}` answer")).into()
                        );
                    }
                }
                if i % UNPAIR_BLOCK == 0 {
                    blocks.push((Vec::new(), Vec::new()));
                }
                // Cannot fail: row 0 (0 % UNPAIR_BLOCK == 0) pushed the first block above.
                let block = blocks.last_mut().expect("a block per 1000 rows");
                block.0.push((i, prompt.clone(), chosen, true));
                block.1.push((i, prompt, rejected, false));
            }
            (_, other) => {
                let expected = if paired {
                    "a paired row (`prompt`, `chosen`, `rejected`) like the first row"
                } else {
                    "an unpaired row (`prompt`, `completion`, `label`) or, in every row, a \
                     paired one (`prompt`, `chosen`, `rejected`)"
                };
                return Err(row_error(
                    &at[i],
                    format!("{expected}; found a {} row", other.kind().as_str()),
                )
                .into());
            }
        }
    }
    for (chosen, rejected) in blocks {
        rows.extend(chosen);
        rows.extend(rejected);
    }
    Ok(rows)
}

/// Right-padded `[rows, seq]` arrays of `prompt + completion` sequences (the start kept).
fn collate(
    seqs: &[(&[u32], &[u32])],
    pad: u32,
    max_length: Option<usize>,
) -> (Vec<u32>, Vec<u8>, Vec<u8>, usize) {
    let rows: Vec<(Vec<u32>, Vec<u8>)> = seqs
        .iter()
        .map(|(p, c)| {
            let mut ids = p.to_vec();
            ids.extend_from_slice(c);
            let mut mask = vec![0u8; p.len()];
            mask.resize(ids.len(), 1);
            if let Some(m) = max_length {
                ids.truncate(m);
                mask.truncate(m);
            }
            (ids, mask)
        })
        .collect();
    let seq = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let (mut ids, mut att, mut comp) = (Vec::new(), Vec::new(), Vec::new());
    for (r, m) in rows {
        let n = r.len();
        ids.extend(r);
        ids.resize(ids.len() + seq - n, pad);
        att.extend(std::iter::repeat_n(1u8, n));
        att.resize(att.len() + seq - n, 0);
        comp.extend(m);
        comp.resize(comp.len() + seq - n, 0);
    }
    (ids, att, comp, seq)
}

impl KtoRun {
    /// The loss settings (TRL's `KTOConfig`).
    pub fn kto_config(&self) -> KtoConfig {
        KtoConfig {
            loss_type: self.loss_type,
            beta: self.beta,
            desirable_weight: self.desirable_weight,
            undesirable_weight: self.undesirable_weight,
        }
    }

    fn validate_own(&self) -> Result<()> {
        self.kto_config().validate()?;
        if self.kto_config().uses_kl() && self.batch_size < 2 {
            return Err(TrainError::setting(
                "batch_size",
                self.batch_size,
                "at least 2 for loss_type kto (TRL: \"Actual (not effective) batch size must be \
                 > 1\"): the KL term pairs each prompt with another row's completion",
            )
            .into());
        }
        Ok(())
    }

    /// The training batches of `spec` as this run encodes them (see the module doc): rows
    /// unpaired, encoded, left out when the prompt fills `max_length`, batched in order with
    /// their rotated KL rows.
    pub fn encode(
        &self,
        tok: &tilpass_tokenize::Tokenizer,
        spec: &DatasetSpec,
        progress: &mut dyn FnMut(Event),
    ) -> Result<Vec<KtoBatch>> {
        let (records, at) = load_rows(spec)?;
        let rows = unpaired_rows(&records, &at)?;
        let cfg = PreferenceConfig {
            max_length: self.max_length,
            truncation: Truncation::KeepStart,
            pad_to_multiple_of: None,
            chat_template: self.chat_template.clone(),
        };
        // Each row encoded as TRL's KTO does: the DPO encoding of (prompt, completion).
        let mut encoded: Vec<Encoded> = Vec::with_capacity(rows.len());
        let mut too_long = 0usize;
        for (i, prompt, completion, label) in rows {
            let pair = Record::Preference {
                prompt,
                chosen: completion.clone(),
                rejected: completion,
            };
            let e = encode_preference(tok, &pair, &cfg, i).map_err(TrainError::from)?;
            if self.max_length.is_some_and(|m| e.prompt_ids.len() >= m) {
                too_long += 1;
                continue;
            }
            encoded.push((e.prompt_ids, e.chosen_ids, label));
        }
        progress(Event::Detail(&format!(
            "{spec}: {} rows ({too_long} left out whose prompt fills max_length)",
            encoded.len()
        )));
        let kto = self.kto_config();
        let mut chunks: Vec<&[Encoded]> = encoded.chunks(self.batch_size).collect();
        if kto.uses_kl() && chunks.len() > 1 && chunks.last().is_some_and(|c| c.len() == 1) {
            chunks.pop();
            progress(Event::Message(&format!(
                "warning: {spec}: the last batch has 1 row; left out (KTO's KL term needs more \
                 than one row per batch)"
            )));
        }
        if chunks.is_empty() || (kto.uses_kl() && chunks[0].len() < 2) {
            return Err(TrainError::setting(
                "data",
                spec,
                "at least 2 rows that fit max_length (KTO's KL term needs a batch of > 1)",
            )
            .into());
        }
        let pad = tok.pad_id().or(tok.eos_id()).unwrap_or(0);
        let batches = chunks
            .iter()
            .map(|c| {
                let seqs: Vec<(&[u32], &[u32])> =
                    c.iter().map(|(p, y, _)| (&p[..], &y[..])).collect();
                let labels: Vec<bool> = c.iter().map(|r| r.2).collect();
                let (ids, att, comp, seq) = collate(&seqs, pad, self.max_length);
                let batch = KtoBatch::new(ids, att, comp, labels, seq)?;
                if !kto.uses_kl() {
                    return Ok(batch);
                }
                let completions: Vec<&[u32]> = c.iter().map(|r| &r.1[..]).collect();
                let kl: Vec<(&[u32], &[u32])> = c
                    .iter()
                    .zip(kl_rotation(&completions))
                    .map(|(r, y)| (&r.0[..], y))
                    .collect();
                let (ids, att, comp, seq) = collate(&kl, pad, self.max_length);
                batch.with_kl(ids, att, comp, seq)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(batches)
    }

    /// Runs KTO on `device` (see [`crate::orpo_run::OrpoRun::run`]); the reference is the
    /// model with its adapters disabled, or with `full` a second copy of the starting model.
    pub fn run(
        &self,
        device: &Device,
        progress: &mut dyn FnMut(Event),
    ) -> Result<PreferenceOutcome> {
        let mut resume = COMMON_RESUME_SETTINGS.to_vec();
        resume.extend([
            "beta",
            "loss_type",
            "desirable_weight",
            "undesirable_weight",
        ]);
        let common = self.common();
        let started = start(self, &common, &resume, device)?;
        let batches = self.encode(&started.tokenizer, &started.data, progress)?;
        let eval_batches = match &self.eval_data {
            Some(spec) => self.encode(&started.tokenizer, spec, progress)?,
            None => Vec::new(),
        };
        let kto = self.kto_config();
        let mut peft = load_model(&common, &started, progress)?;
        let reference = if self.full {
            Some(DecoderLm::load(&started.model_dir, &started.device)?)
        } else {
            None
        };
        let (target, kto_ref) = match &reference {
            Some(r) => (Target::Full, DpoReference::Model(r)),
            None => (Target::Adapter("default"), DpoReference::DisabledAdapters),
        };
        let summary = train_kto(
            &mut peft,
            target,
            kto_ref,
            &kto,
            &batches,
            &eval_batches,
            &self.train_config(),
            self.resume.as_deref(),
            progress,
        )?;
        let saved = save(&common, &started, &peft)?;
        drop(started.fresh);
        Ok(PreferenceOutcome {
            summary,
            saved,
            model: peft,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Content {
        Content::Text(s.into())
    }

    #[test]
    fn paired_rows_are_unpaired_as_trl_does_and_bad_rows_named() {
        let at: Vec<String> = (1..=2).map(|i| format!("d.jsonl:{i}")).collect();
        let pair = |p: &str, c: &str, r: &str| Record::Preference {
            prompt: Some(text(p)),
            chosen: text(c),
            rejected: text(r),
        };
        let rows = unpaired_rows(&[pair("a", " b", " c"), pair("d", " e", " f")], &at).unwrap();
        let got: Vec<(String, bool)> = rows
            .iter()
            .map(|(_, _, c, l)| (format!("{c:?}"), *l))
            .collect();
        assert_eq!(
            got,
            vec![
                (format!("{:?}", text(" b")), true),
                (format!("{:?}", text(" e")), true),
                (format!("{:?}", text(" c")), false),
                (format!("{:?}", text(" f")), false),
            ]
        );
        let err = unpaired_rows(&[pair("a", " b", " c"), pair("d", " ", " f")], &at)
            .unwrap_err()
            .to_string();
        assert!(err.contains("d.jsonl:2") && err.contains("chosen"), "{err}");
        let unpaired = |c: &str| Record::Unpaired {
            prompt: text("p"),
            completion: text(c),
            label: true,
        };
        let err = unpaired_rows(&[unpaired(" x"), unpaired("")], &at)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("d.jsonl:2") && err.contains("completion"),
            "{err}"
        );
        let err = unpaired_rows(&[unpaired(" x"), pair("a", " b", " c")], &at)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("d.jsonl:2") && err.contains("preference"),
            "{err}"
        );
    }

    #[test]
    fn collation_pads_right_and_keeps_the_start() {
        let (ids, att, comp, seq) = collate(&[(&[1, 2], &[3]), (&[4], &[5, 6, 7])], 0, Some(3));
        assert_eq!(seq, 3);
        assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(att, vec![1; 6]);
        assert_eq!(comp, vec![0, 0, 1, 0, 1, 1]);
        let (ids, att, comp, _) = collate(&[(&[1], &[3]), (&[4], &[5, 6])], 9, None);
        assert_eq!(ids, vec![1, 3, 9, 4, 5, 6]);
        assert_eq!(att, vec![1, 1, 0, 1, 1, 1]);
        assert_eq!(comp, vec![0, 1, 0, 0, 1, 1]);
    }
}

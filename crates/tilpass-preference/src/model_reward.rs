//! Reward-model rewards for GRPO / RLOO: a sequence classifier ([`RewardModel`], e.g. a
//! [`tilpass_models::DecoderClassifier`] trained by `tilpass train reward`) scoring prompt +
//! completion, as TRL's `GRPOTrainer` scores with a reward model: the texts `prompt +
//! completion` tokenised without special tokens, right-padded, the first output of each row.

use tilpass_models::DecoderInput;
use tilpass_tokenize::Tokenizer;
use tilpass_train::TrainError;

use crate::error::{PreferenceError, Result};
use crate::logps::host;
use crate::reward_trainer::RewardModel;
use crate::rewards::RewardFunction;
use serde_json::Value;

/// A reward model with its tokenizer, scoring batches of texts.
pub struct ModelReward<'m, M: RewardModel> {
    /// The name in the logged metrics.
    pub name: String,
    /// The sequence classifier (its first output is the reward).
    pub model: &'m M,
    /// Its tokenizer.
    pub tokenizer: &'m Tokenizer,
    /// The id right-padding uses (the model's pad id).
    pub pad_token_id: u32,
    /// Rows per forward pass.
    pub batch_size: usize,
}

impl<M: RewardModel> ModelReward<'_, M> {
    /// Rewards of `prompts[i] + completions[i]`, `[completions]`.
    pub fn score(&self, prompts: &[&str], completions: &[&str]) -> Result<Vec<f64>> {
        if prompts.len() != completions.len() {
            return Err(PreferenceError::Shape {
                input: "prompts",
                got: format!("[{}]", prompts.len()),
                expected: format!("[{}] (one per completion)", completions.len()),
            });
        }
        self.model.check_padding()?;
        let mut out = Vec::with_capacity(prompts.len());
        let texts: Vec<String> = prompts
            .iter()
            .zip(completions)
            .map(|(p, c)| format!("{p}{c}"))
            .collect();
        for chunk in texts.chunks(self.batch_size.max(1)) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let ids = self
                .tokenizer
                .encode_batch(&refs, false)
                .map_err(TrainError::from)?;
            if let Some(i) = ids.iter().position(Vec::is_empty) {
                return Err(PreferenceError::BadValue {
                    input: "completions",
                    index: out.len() + i,
                    value: 0.0,
                    expected: "a prompt + completion of at least one token",
                });
            }
            let seq = ids.iter().map(Vec::len).max().unwrap_or(0);
            let batch = ids.len();
            let mut input_ids = Vec::with_capacity(batch * seq);
            let mut attention_mask = Vec::with_capacity(batch * seq);
            for row in &ids {
                input_ids.extend(row);
                input_ids.extend(std::iter::repeat_n(self.pad_token_id, seq - row.len()));
                attention_mask.extend(std::iter::repeat_n(1u8, row.len()));
                attention_mask.extend(std::iter::repeat_n(0u8, seq - row.len()));
            }
            let input = DecoderInput {
                input_ids,
                attention_mask,
                position_ids: (0..batch).flat_map(|_| 0..seq as i64).collect(),
                batch,
                seq,
            };
            let scores = self.model.row_scores(&input)?;
            let [_, labels] = scores.dims();
            let v = host(&scores, "reward model scores")?;
            out.extend((0..batch).map(|r| v[r * labels]));
        }
        Ok(out)
    }
}

impl<M: RewardModel + Send + Sync> RewardFunction for ModelReward<'_, M> {
    fn name(&self) -> String {
        self.name.clone()
    }

    /// One completion scored alone; `None` when the model fails on it (use
    /// [`RewardFunction::rewards`], which reports the error).
    fn reward(&self, prompt: &str, completion: &str, _row: &Value) -> Option<f32> {
        self.score(&[prompt], &[completion])
            .ok()
            .and_then(|v| v.first().map(|r| *r as f32))
    }

    fn rewards(
        &self,
        prompts: &[&str],
        completions: &[&str],
        _rows: &[&Value],
    ) -> Result<Vec<Option<f32>>> {
        Ok(self
            .score(prompts, completions)?
            .into_iter()
            .map(|r| Some(r as f32))
            .collect())
    }
}

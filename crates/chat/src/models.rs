//! Model names the server answers to, and the thinking mode each defaults to.

use deepseek_recipe::request::{ConversionOptions, ModelVersion};

use crate::ChatError;

/// The model id this engine serves (what `/v1/models` lists).
pub const MODEL_ID: &str = "deepseek-v4-flash";

/// The recipe crate's model version whose encoder is the DeepSeek V4 one.
///
/// `deepseek-recipe` 0.2.0 names its V4 target `DeepseekV4Pro` ("rendered by
/// `DeepseekV4Encoding`"); V4 Flash and V4 Pro share that encoder and chat template, so
/// every name below maps to it. `DeepseekV41Flash` would select the V4.1 template (system
/// token, numeric effort, images), which is a different model.
pub const V4_MODEL_VERSION: ModelVersion = ModelVersion::DeepseekV4Pro;

/// Request model names and the thinking mode each uses when the request does not say.
///
/// An explicit `thinking` / `reasoning_effort` in the request always wins (the recipe
/// crate resolves that); the table only supplies the default, which is how the official
/// API distinguishes `deepseek-chat` (non-thinking) from `deepseek-reasoner` (thinking).
#[derive(Debug, Clone)]
pub struct ModelCatalog {
    names: Vec<(String, bool)>,
    /// Default thinking mode for names not in the table, or `None` to reject them.
    fallback: Option<bool>,
}

impl ModelCatalog {
    /// The names DeepSeek's API and HF use for this model:
    ///
    /// | name | thinking by default |
    /// | --- | --- |
    /// | `deepseek-v4-flash` | yes |
    /// | `DeepSeek-V4-Flash` | yes |
    /// | `deepseek-ai/DeepSeek-V4-Flash` | yes |
    /// | `deepseek-reasoner` | yes |
    /// | `deepseek-chat` | no |
    ///
    /// Other names (including the recipe crate's defaults `DeepSeek-V4-Pro` and
    /// `DeepSeek-V4.1-Flash`, which are other models) are rejected; see
    /// [`ModelCatalog::accept_any_model`].
    pub fn standard() -> Self {
        ModelCatalog {
            names: vec![
                (MODEL_ID.to_owned(), true),
                ("DeepSeek-V4-Flash".to_owned(), true),
                ("deepseek-ai/DeepSeek-V4-Flash".to_owned(), true),
                ("deepseek-reasoner".to_owned(), true),
                ("deepseek-chat".to_owned(), false),
            ],
            fallback: None,
        }
    }

    /// Add a name (or change an existing name's default thinking mode).
    pub fn with_model(mut self, name: impl Into<String>, thinks_by_default: bool) -> Self {
        let name = name.into();
        match self.names.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = thinks_by_default,
            None => self.names.push((name, thinks_by_default)),
        }
        self
    }

    /// Serve any model name, like ds4 does (agents often send their own preset names);
    /// unknown names default to `thinks_by_default`.
    pub fn accept_any_model(mut self, thinks_by_default: bool) -> Self {
        self.fallback = Some(thinks_by_default);
        self
    }

    /// The names in the table, in insertion order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|(n, _)| n.as_str())
    }

    /// Whether `model` thinks by default, or `None` if the name is not served.
    pub fn thinks_by_default(&self, model: &str) -> Option<bool> {
        self.names
            .iter()
            .find(|(n, _)| n == model)
            .map(|&(_, t)| t)
            .or(self.fallback)
    }

    /// Recipe conversion options for a request naming `model`: every served name maps to
    /// the V4 encoder, and the default thinking mode is the name's.
    pub fn conversion_options(&self, model: &str) -> Result<ConversionOptions, ChatError> {
        let thinks = self
            .thinks_by_default(model)
            .ok_or_else(|| ChatError::UnknownModel {
                model: model.to_owned(),
                supported: self.names().map(str::to_owned).collect(),
            })?;
        // Replace the crate's default table (V4 Pro / V4.1 Flash names) with ours, plus
        // the requested name itself when the fallback admits it.
        let table = self
            .names()
            .chain(std::iter::once(model))
            .map(|n| (n.to_owned(), V4_MODEL_VERSION));
        Ok(ConversionOptions::new()
            .with_model_versions_by_name(table)
            .with_default_thinking_mode(thinks))
    }
}

impl Default for ModelCatalog {
    fn default() -> Self {
        ModelCatalog::standard()
    }
}

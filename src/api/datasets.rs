//! Datasets: upload (GraphQL multipart request), look up, list; archive, restore, delete, clean up.

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, ID, InputObject, Object, SimpleObject, Upload};

use super::loaders::DatasetLoader;
use super::paging::{Count, Page, PageRequest, page};
use super::{ApiError, ApiResult, service, timestamp};
use crate::domain::{self, DatasetRecord};
use crate::service::UploadRequest;

mirror_enum!(
    /// File format of a dataset.
    DatasetFormat => domain::DatasetFormat { Jsonl, Csv, Parquet }
);
mirror_enum!(
    /// What a dataset can train: TEXT (a text and a label field) or TABULAR (numeric features and a label).
    DatasetKind => domain::DatasetKind { Text, Tabular }
);
mirror_enum!(
    /// UPLOADED while being checked, then READY or INVALID.
    DatasetStatus => domain::DatasetStatus { Uploaded, Ready, Invalid }
);
mirror_enum!(
    /// A kind of personal data or secret: EMAIL, PHONE, CREDIT_CARD (Luhn-checked), SSN (US), IP_ADDRESS
    /// (v4 or v6), IBAN (mod-97 checked), SECRET (AWS access keys, bearer tokens, private-key headers,
    /// API keys with known prefixes).
    PiiKind => domain::PiiKind { Email, Phone, CreditCard, Ssn, IpAddress, Iban, Secret }
);
mirror_enum!(
    /// How a derived dataset was made: REDACT (`redactDataset`), AUGMENT (`augmentDataset`), BALANCE
    /// (`balanceDataset`), SYNTHESIZE (`generateSyntheticDataset`, no parent).
    DerivationKind => domain::DerivationKind { Redact, Augment, Balance, Synthesize }
);
mirror_enum!(
    /// FRESH until a job trains on it, then USED; ARCHIVED while put away (no new job may train on it;
    /// `restoreDataset` brings it back).
    DatasetLifecycle => domain::DatasetLifecycle { Fresh, Used, Archived }
);

/// Which fields to read. Each part left out keeps what it was (at upload: text `text`, label `label`,
/// features every column but the label when the file has no text field). Give `textField` for a text
/// dataset or `featureFields` for a table, not both.
#[derive(InputObject, Default)]
pub struct FieldMappingInput {
    pub text_field: Option<String>,
    pub label_field: Option<String>,
    /// A table's feature columns, in this order; the file's other columns are ignored. Up to 10000.
    pub feature_fields: Option<Vec<String>>,
}

impl From<FieldMappingInput> for domain::MappingInput {
    fn from(input: FieldMappingInput) -> Self {
        Self {
            text_field: input.text_field,
            label_field: input.label_field,
            feature_fields: input.feature_fields,
        }
    }
}

/// The fields a dataset or a job reads.
#[derive(SimpleObject)]
pub struct FieldMapping {
    pub text_field: String,
    pub label_field: String,
    /// A table's feature columns when named; null: every column but the label.
    pub feature_fields: Option<Vec<String>>,
}

impl From<&domain::FieldNames> for FieldMapping {
    fn from(names: &domain::FieldNames) -> Self {
        Self {
            text_field: names.text.clone(),
            label_field: names.label.clone(),
            feature_fields: names.features.clone(),
        }
    }
}

/// Rules a dataset's rows must meet besides being readable. A row that breaks a per-row rule is an
/// error naming its line; the count rules are errors of the whole file.
#[derive(InputObject, Default)]
#[graphql(name = "ValidationRulesInput")]
pub struct ValidationRulesInput {
    /// At least this many valid rows (≥ 1).
    pub min_rows: Option<i64>,
    /// Every label is one of these (1–1000 labels).
    pub allowed_labels: Option<Vec<String>>,
    /// No text is longer than this many characters (1–100000).
    pub max_text_length: Option<i64>,
    /// Every row has these fields, neither null nor blank (up to 100).
    pub required_fields: Option<Vec<String>>,
    /// Every label has at least this many rows (≥ 1; labels of `allowedLabels` that never occur
    /// have 0).
    pub min_rows_per_label: Option<i64>,
}

impl From<&ValidationRulesInput> for domain::RulesInput {
    fn from(input: &ValidationRulesInput) -> Self {
        Self {
            min_rows: input.min_rows,
            allowed_labels: input.allowed_labels.clone(),
            max_text_length: input.max_text_length,
            required_fields: input.required_fields.clone(),
            min_rows_per_label: input.min_rows_per_label,
        }
    }
}

/// The rules a dataset was checked against.
#[derive(SimpleObject)]
pub struct ValidationRules {
    pub min_rows: Option<i64>,
    pub allowed_labels: Option<Vec<String>>,
    pub max_text_length: Option<i64>,
    pub required_fields: Vec<String>,
    pub min_rows_per_label: Option<i64>,
}

/// How a CSV file is laid out, as kiln found it.
#[derive(SimpleObject)]
pub struct CsvDialect {
    /// `,`, `;`, `|` or `\t` (a tab).
    pub delimiter: String,
    /// Whether the first row names the columns (without one they are column1, column2, …).
    pub header: bool,
}

/// What is in a dataset, measured by the pass that validated it.
#[derive(SimpleObject)]
pub struct DatasetStats {
    /// Valid rows.
    pub rows: i64,
    /// Rows per label, sorted by label.
    pub labels: Vec<LabelCount>,
    /// Rows of the most frequent label over rows of the least frequent; null with under two labels.
    pub imbalance_ratio: Option<f64>,
    /// Rows that repeat an earlier row exactly: the same text (whitespace collapsed) or the same
    /// feature values, and the same label.
    pub duplicate_rows: i64,
    /// Distinct texts (or feature rows) labelled two or more ways, and the rows that hold them.
    pub conflicting_texts: i64,
    pub conflicting_rows: i64,
    /// The first 100 such texts, by first line.
    pub conflicts: Vec<LabelConflict>,
    /// Rows whose text is empty or whitespace (each is an error too).
    pub empty_texts: i64,
    /// Text lengths in characters, over valid rows; null for a table.
    pub text_length: Option<LengthSummary>,
    /// Each feature column of a table, in feature order.
    pub features: Vec<FeatureSummary>,
    /// False when the file had more than 900 000 distinct rows: repeats, conflicts and overlaps
    /// were then counted among the first 900 000 only.
    pub complete: bool,
}

/// One text labelled two or more ways: a labelling conflict.
#[derive(SimpleObject)]
pub struct LabelConflict {
    /// The text, whitespace collapsed, at most 200 characters.
    pub excerpt: String,
    /// Each label it has and on how many rows.
    pub labels: Vec<LabelCount>,
    /// The lines (Parquet: rows) it is on, the first 10.
    pub lines: Vec<i64>,
}

/// A distribution of lengths, with nearest-rank percentiles.
#[derive(SimpleObject)]
pub struct LengthSummary {
    pub min: i64,
    pub max: i64,
    pub mean: f64,
    pub p50: i64,
    pub p90: i64,
    pub p95: i64,
    pub p99: i64,
    /// At most 20 equal-width buckets from the shortest length to the 99th percentile; the last also
    /// holds every longer text.
    pub histogram: Vec<LengthBucket>,
}

#[derive(SimpleObject)]
pub struct LengthBucket {
    pub from: i64,
    /// Inclusive.
    pub to: i64,
    pub count: i64,
}

/// One numeric column, over the rows where it is a number.
#[derive(SimpleObject)]
pub struct FeatureSummary {
    pub name: String,
    pub count: i64,
    /// Rows where it is missing, null or blank.
    pub missing: i64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    /// The population standard deviation.
    pub std: Option<f64>,
}

/// How a derived dataset was made from its parent.
#[derive(SimpleObject)]
pub struct DatasetDerivation {
    pub operation: DerivationKind,
    /// The parent's id (the parent itself is `Dataset.parent`, null once deleted); null for a
    /// dataset generated from templates.
    pub parent_id: Option<ID>,
    /// What the operation was given, as JSON text (`{"kinds":["EMAIL"]}`).
    pub spec: String,
    /// SHA-256 of `spec`, hex: the same operation on the same parent has the same hash.
    pub spec_hash: String,
}

/// A dataset's text lengths in tokens, as one base model's tokenizer counts them.
#[derive(SimpleObject)]
pub struct TokenLengths {
    /// The base model, as given to `measureTokenLengths`.
    pub tokenizer: String,
    pub measured_at: String,
    /// Tokens per text, special tokens included, nothing cut off.
    pub lengths: LengthSummary,
}

/// One kind of personal data found in a dataset's texts.
#[derive(SimpleObject)]
pub struct PiiFinding {
    pub kind: PiiKind,
    /// Findings of this kind.
    pub count: i64,
    /// Rows with at least one.
    pub rows: i64,
    /// The first 10 rows with one, the finding masked.
    pub samples: Vec<PiiSample>,
}

/// Where a finding is, and the text around it with every finding in it masked.
#[derive(SimpleObject)]
pub struct PiiSample {
    /// The line of the file (Parquet: the row).
    pub row: i64,
    pub excerpt: String,
}

/// Rows of this dataset that also occur in another: what `overlapWith` found.
#[derive(SimpleObject)]
pub struct DatasetOverlap {
    /// The dataset compared with.
    pub dataset: Dataset,
    /// Rows of this dataset whose text (whitespace collapsed; a table's feature values) the other has.
    pub rows: i64,
    /// Distinct such texts.
    pub distinct_texts: i64,
    /// `rows` over this dataset's valid rows.
    pub fraction: f64,
    /// The first lines of this dataset where such a text occurs, at most 20.
    pub lines: Vec<i64>,
    /// False when either dataset's statistics are not complete.
    pub complete: bool,
}

fn length_summary(l: &domain::LengthSummary) -> LengthSummary {
    LengthSummary {
        min: l.min as i64,
        max: l.max as i64,
        mean: l.mean,
        p50: l.p50 as i64,
        p90: l.p90 as i64,
        p95: l.p95 as i64,
        p99: l.p99 as i64,
        histogram: l
            .histogram
            .iter()
            .map(|b| LengthBucket {
                from: b.from as i64,
                to: b.to as i64,
                count: b.count as i64,
            })
            .collect(),
    }
}

fn label_counts<'a>(pairs: impl Iterator<Item = (&'a String, &'a u64)>) -> Vec<LabelCount> {
    pairs
        .map(|(label, count)| LabelCount {
            label: label.clone(),
            count: *count as i64,
        })
        .collect()
}

#[derive(SimpleObject)]
pub struct LabelCount {
    pub label: String,
    pub count: i64,
}

/// One problem found in a dataset file.
#[derive(SimpleObject)]
pub struct DatasetError {
    /// 1-based line of the file (CSV: a header is line 1; Parquet: the 1-based row); null for problems
    /// of the whole file.
    pub line: Option<i64>,
    pub message: String,
}

pub struct Dataset(pub DatasetRecord);

impl Dataset {
    /// A dataset by id through the request's DataLoader (one round trip for every dataset a response
    /// holds).
    pub async fn load(ctx: &Context<'_>, id: &str) -> ApiResult<Option<Self>> {
        let loader = ctx.data_unchecked::<DataLoader<DatasetLoader>>();
        Ok(loader.load_one(id.to_string()).await?.map(Self))
    }
}

#[Object]
impl Dataset {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn format(&self) -> DatasetFormat {
        self.0.format.into()
    }
    /// Known once the file has been read.
    async fn kind(&self) -> Option<DatasetKind> {
        self.0.summary.kind.map(Into::into)
    }
    async fn status(&self) -> DatasetStatus {
        self.0.status.into()
    }
    /// Valid rows (rows with errors are not counted).
    async fn row_count(&self) -> i64 {
        self.0.summary.row_count as i64
    }
    async fn size_bytes(&self) -> i64 {
        self.0.size_bytes
    }
    /// SHA-256 of the uploaded bytes, hex.
    async fn sha256(&self) -> &str {
        &self.0.sha256
    }
    async fn text_field(&self) -> &str {
        &self.0.fields.text
    }
    async fn label_field(&self) -> &str {
        &self.0.fields.label
    }
    /// The fields it is read by (`textField` and `labelField` are part of it).
    async fn mapping(&self) -> FieldMapping {
        (&self.0.fields).into()
    }
    /// The rules its rows were checked against.
    async fn rules(&self) -> ValidationRules {
        let r = &self.0.rules;
        ValidationRules {
            min_rows: r.min_rows.map(|v| v as i64),
            allowed_labels: r.allowed_labels.clone(),
            max_text_length: r.max_text_length.map(|v| v as i64),
            required_fields: r.required_fields.clone(),
            min_rows_per_label: r.min_rows_per_label.map(|v| v as i64),
        }
    }
    /// The file's fields: a CSV file's columns (column1, column2, … without a header), a Parquet
    /// file's top-level columns, the keys its JSONL rows use (at most 10002). Empty until read.
    async fn columns(&self) -> &[String] {
        &self.0.summary.layout.columns
    }
    /// A CSV file's delimiter and header, as kiln found them; null for other formats.
    async fn csv(&self) -> Option<CsvDialect> {
        self.0.summary.layout.csv.map(|d| CsvDialect {
            delimiter: d.delimiter_name(),
            header: d.header,
        })
    }
    /// Feature columns of a tabular dataset.
    async fn features(&self) -> &[String] {
        &self.0.summary.features
    }
    /// Rows per label, sorted by label.
    async fn labels(&self) -> Vec<LabelCount> {
        label_counts(self.0.summary.labels.iter())
    }
    /// What is in it, measured when it was validated (READY or INVALID); null before, and for a
    /// dataset validated before kiln kept statistics (`validateDataset` measures it again).
    async fn stats(&self) -> Option<DatasetStats> {
        let s = self.0.summary.stats.as_ref()?;
        Some(DatasetStats {
            rows: s.rows as i64,
            labels: label_counts(self.0.summary.labels.iter()),
            imbalance_ratio: s.imbalance_ratio,
            duplicate_rows: s.duplicate_rows as i64,
            conflicting_texts: s.conflicting_texts as i64,
            conflicting_rows: s.conflicting_rows as i64,
            conflicts: s
                .conflicts
                .iter()
                .map(|c| LabelConflict {
                    excerpt: c.excerpt.clone(),
                    labels: label_counts(c.labels.iter().map(|(l, n)| (l, n))),
                    lines: c.lines.iter().map(|&l| l as i64).collect(),
                })
                .collect(),
            empty_texts: s.empty_texts as i64,
            text_length: s.text_length.as_ref().map(length_summary),
            features: s
                .features
                .iter()
                .map(|f| FeatureSummary {
                    name: f.name.clone(),
                    count: f.count as i64,
                    missing: f.missing as i64,
                    min: f.min,
                    max: f.max,
                    mean: f.mean,
                    std: f.std,
                })
                .collect(),
            complete: s.complete,
        })
    }
    /// Its texts' lengths in tokens, one entry per tokenizer measured (`measureTokenLengths`), oldest
    /// first.
    async fn token_lengths(&self) -> Vec<TokenLengths> {
        self.0
            .token_lengths
            .iter()
            .map(|t| TokenLengths {
                tokenizer: t.tokenizer.clone(),
                measured_at: timestamp(t.measured_at),
                lengths: length_summary(&t.lengths),
            })
            .collect()
    }
    /// How it was made from another dataset; null for an upload.
    async fn derivation(&self) -> Option<DatasetDerivation> {
        self.0.derivation.as_ref().map(|d| DatasetDerivation {
            operation: d.operation.into(),
            parent_id: d.parent_id.clone().map(ID),
            spec: d.spec.to_string(),
            spec_hash: d.spec_hash.clone(),
        })
    }
    /// The dataset it was made from; null for an upload, or once the parent is deleted.
    async fn parent(&self, ctx: &Context<'_>) -> ApiResult<Option<Dataset>> {
        match self
            .0
            .derivation
            .as_ref()
            .and_then(|d| d.parent_id.as_deref())
        {
            Some(parent) => Dataset::load(ctx, parent).await,
            None => Ok(None),
        }
    }
    /// The datasets made from it (redacted copies, …), oldest first, at most 100.
    async fn children(&self, ctx: &Context<'_>) -> ApiResult<Vec<Dataset>> {
        Ok(service(ctx)
            .dataset_children(&self.0.id)
            .await?
            .into_iter()
            .map(Dataset)
            .collect())
    }
    /// Personal data and secrets in the texts of its valid rows, by kind (empty: none found); null
    /// until read, and for a dataset read before kiln scanned for them. `submitJob` refuses a dataset
    /// with findings unless `allowPii` (or the server's `KILN_ALLOW_PII`); `redactDataset` makes a copy
    /// without them.
    async fn pii(&self) -> Option<Vec<PiiFinding>> {
        let report = self.0.summary.pii.as_ref()?;
        Some(
            report
                .findings
                .iter()
                .map(|f| PiiFinding {
                    kind: f.kind.into(),
                    count: f.count as i64,
                    rows: f.rows as i64,
                    samples: f
                        .samples
                        .iter()
                        .map(|s| PiiSample {
                            row: s.line as i64,
                            excerpt: s.excerpt.clone(),
                        })
                        .collect(),
                })
                .collect(),
        )
    }
    /// Rows of this dataset that also occur in dataset `datasetId` (say, a test set's rows that are
    /// in the training set: leakage). Read from keys kept at validation, so it answers without reading
    /// either file.
    async fn overlap_with(&self, ctx: &Context<'_>, dataset_id: ID) -> ApiResult<DatasetOverlap> {
        let (other, found) = service(ctx)
            .dataset_overlap(&self.0.id, &dataset_id)
            .await?;
        let complete = [&self.0, &other]
            .iter()
            .all(|d| d.summary.stats.as_ref().is_some_and(|s| s.complete));
        let rows = self.0.summary.row_count.max(1) as f64;
        Ok(DatasetOverlap {
            dataset: Dataset(other),
            rows: found.rows as i64,
            distinct_texts: found.distinct as i64,
            fraction: found.rows as f64 / rows,
            lines: found.lines.iter().map(|&l| l as i64).collect(),
            complete,
        })
    }
    /// The first 100 problems found; `errorCount` counts all of them.
    async fn errors(&self) -> Vec<DatasetError> {
        self.0
            .summary
            .errors
            .iter()
            .map(|e| DatasetError {
                line: e.line.map(|l| l as i64),
                message: e.message.clone(),
            })
            .collect()
    }
    async fn error_count(&self) -> i64 {
        self.0.summary.error_count as i64
    }
    async fn created_at(&self) -> String {
        timestamp(self.0.created_at)
    }
    async fn lifecycle(&self) -> DatasetLifecycle {
        self.0.lifecycle().into()
    }
    /// When a job first trained on it.
    async fn used_at(&self) -> Option<String> {
        self.0.used_at.map(timestamp)
    }
    async fn archived_at(&self) -> Option<String> {
        self.0.archived_at.map(timestamp)
    }
    /// The jobs that train or trained on it, newest first. `first`: 1–100 (default 20).
    #[graphql(complexity = "super::paging::complexity(first, child_complexity)")]
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Page<(i64, String), super::jobs::Job>> {
        let filter = domain::JobFilter {
            dataset_id: Some(self.0.id.clone()),
            ..Default::default()
        };
        super::jobs::job_page(ctx, filter, first, after).await
    }
    /// `GET` it with the API token: the file as uploaded.
    async fn download_url(&self) -> String {
        format!("/datasets/{}/download", self.0.id)
    }
}

/// A dataset `cleanupDatasets` kept, and why.
#[derive(SimpleObject)]
pub struct KeptDataset {
    pub dataset: Dataset,
    /// What still refers to it.
    pub reason: String,
}

/// What `cleanupDatasets` removed, or on a dry run would remove.
#[derive(SimpleObject)]
pub struct DatasetCleanup {
    pub dry_run: bool,
    pub removed: Vec<Dataset>,
    pub kept: Vec<KeptDataset>,
}

#[derive(Default)]
pub struct DatasetsQuery;

#[Object]
impl DatasetsQuery {
    async fn dataset(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<Dataset>> {
        Ok(service(ctx).dataset(&id).await?.map(Dataset))
    }

    /// Newest first. `first`: 1–100 (default 20).
    #[graphql(complexity = "super::paging::complexity(first, child_complexity)")]
    async fn datasets(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Page<(i64, String), Dataset>> {
        let request = PageRequest::parse(first, after)?;
        let rows = service(ctx)
            .datasets(request.fetch(), request.after.clone())
            .await?;
        Ok(page(
            &request,
            rows,
            Count::Datasets,
            |d| (d.created_at, d.id.clone()),
            Dataset,
        ))
    }
}

#[derive(Default)]
pub struct DatasetsMutation;

#[Object]
impl DatasetsMutation {
    /// Uploads a JSONL, CSV or Parquet file (GraphQL multipart request) and validates it. The answer's
    /// `status` is READY, or INVALID with `errors` naming each bad line (or Parquet row). `format`
    /// defaults to the file's extension (.jsonl/.ndjson/.json, .csv/.tsv, .parquet/.pq); `textField` to
    /// "text", `labelField` to "label"; `featureFields` to every column but the label when the file has
    /// no text field. A CSV file's delimiter (`,` tab `;` `|`) and header are found by reading its
    /// start. `rules` adds checks of your own. The upload limit is the server's
    /// `KILN_MAX_UPLOAD_BYTES` (1 GiB by default).
    #[allow(clippy::too_many_arguments)]
    async fn upload_dataset(
        &self,
        ctx: &Context<'_>,
        file: Upload,
        name: String,
        format: Option<DatasetFormat>,
        text_field: Option<String>,
        label_field: Option<String>,
        feature_fields: Option<Vec<String>>,
        rules: Option<ValidationRulesInput>,
    ) -> ApiResult<Dataset> {
        let upload = file
            .value(ctx)
            .map_err(|e| ApiError::bad("file", format!("cannot be read: {e}")))?;
        let request = UploadRequest {
            name,
            file_name: upload.filename,
            format: format.map(Into::into),
            mapping: domain::MappingInput {
                text_field,
                label_field,
                feature_fields,
            },
            rules: rules.as_ref().map(Into::into),
            content: upload.content,
        };
        Ok(Dataset(service(ctx).upload_dataset(request).await?))
    }

    /// Reads a dataset's stored file again with another mapping or other rules, and keeps them: the
    /// dataset becomes READY or INVALID under them (nothing stored is lost either way). Parts of
    /// `mapping` left out stay as they are; `rules`, when given, replaces the rules whole (`{}` clears
    /// them). Jobs already submitted keep the fields they were given. `CONFLICT` while the dataset is
    /// still UPLOADED.
    async fn validate_dataset(
        &self,
        ctx: &Context<'_>,
        id: ID,
        rules: Option<ValidationRulesInput>,
        mapping: Option<FieldMappingInput>,
    ) -> ApiResult<Dataset> {
        let mapping: domain::MappingInput = mapping.map(Into::into).unwrap_or_default();
        let rules: Option<domain::RulesInput> = rules.as_ref().map(Into::into);
        Ok(Dataset(
            service(ctx)
                .validate_dataset(&id, &mapping, rules.as_ref())
                .await?,
        ))
    }

    /// A copy of a dataset with every finding of `kinds` in its texts (`Dataset.pii`) replaced by the
    /// kind in brackets: `[EMAIL]`, `[PHONE]`, …. The copy is a JSONL dataset with the same mapping and
    /// rules, validated and scanned again; `Dataset.parent` and `derivation` say where it came from.
    /// Redacting the same dataset the same way again returns the copy made before.
    async fn redact_dataset(
        &self,
        ctx: &Context<'_>,
        id: ID,
        kinds: Vec<PiiKind>,
    ) -> ApiResult<Dataset> {
        let kinds: Vec<domain::PiiKind> = kinds.into_iter().map(Into::into).collect();
        Ok(Dataset(service(ctx).redact_dataset(&id, &kinds).await?))
    }

    /// Counts the tokens of each valid text of a READY text dataset with the tokenizer of base model
    /// `tokenizer` (a folder under the server's `KILN_MODEL_ROOTS`, `hf:org/name[@revision]`, or
    /// `model:NAME/VERSION`), special tokens included and nothing cut off, and keeps the lengths in
    /// `Dataset.tokenLengths` (the last 10 tokenizers; measuring again replaces that tokenizer's;
    /// `validateDataset` clears them). The file is read again: this takes about as long as validating
    /// it.
    async fn measure_token_lengths(
        &self,
        ctx: &Context<'_>,
        id: ID,
        tokenizer: String,
    ) -> ApiResult<Dataset> {
        Ok(Dataset(
            service(ctx).measure_token_lengths(&id, &tokenizer).await?,
        ))
    }

    /// Puts a dataset away: it keeps its jobs and lineage, but `submitJob` refuses it until
    /// `restoreDataset`.
    async fn archive_dataset(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Dataset> {
        Ok(Dataset(service(ctx).archive_dataset(&id).await?))
    }

    async fn restore_dataset(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Dataset> {
        Ok(Dataset(service(ctx).restore_dataset(&id).await?))
    }

    /// Deletes a dataset and its file; answers its id. `CONFLICT` while a model version's lineage
    /// names it (delete those versions first) or a job uses it (cancel and delete the jobs first),
    /// naming them.
    async fn delete_dataset(&self, ctx: &Context<'_>, id: ID) -> ApiResult<ID> {
        Ok(ID(service(ctx).delete_dataset(&id).await?.id))
    }

    /// Admins only: deletes the datasets created more than `olderThanDays` ago (in `lifecycle`, when
    /// given) that nothing refers to, oldest first, at most 500 a call. With `dryRun` (true unless
    /// false is given) nothing is deleted: the answer lists what would be, and what would be kept and
    /// why.
    async fn cleanup_datasets(
        &self,
        ctx: &Context<'_>,
        older_than_days: i32,
        lifecycle: Option<DatasetLifecycle>,
        dry_run: Option<bool>,
    ) -> ApiResult<DatasetCleanup> {
        let dry_run = dry_run.unwrap_or(true);
        let cleanup = service(ctx)
            .cleanup_datasets(
                super::caller(ctx)?,
                older_than_days.into(),
                lifecycle.map(Into::into),
                dry_run,
            )
            .await?;
        Ok(DatasetCleanup {
            dry_run: cleanup.dry_run,
            removed: cleanup.removed.into_iter().map(Dataset).collect(),
            kept: cleanup
                .kept
                .into_iter()
                .map(|(dataset, reason)| KeptDataset {
                    dataset: Dataset(dataset),
                    reason,
                })
                .collect(),
        })
    }
}

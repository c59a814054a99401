"""Every attribute, metric and value name spendmeter emits, in one place.

Names come from the OpenTelemetry GenAI semantic conventions where one exists; the rest are
spendmeter's own (``spendmeter.*``) and are public: dashboards and alert rules depend on them.
"""

from __future__ import annotations

from typing import Final

# --- span and metric attributes: GenAI semantic conventions -------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P: Final = "gen_ai.request.top_p"
GEN_AI_REQUEST_TOP_K: Final = "gen_ai.request.top_k"
GEN_AI_REQUEST_FREQUENCY_PENALTY: Final = "gen_ai.request.frequency_penalty"
GEN_AI_REQUEST_PRESENCE_PENALTY: Final = "gen_ai.request.presence_penalty"
GEN_AI_REQUEST_STOP_SEQUENCES: Final = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_SEED: Final = "gen_ai.request.seed"
GEN_AI_REQUEST_CHOICE_COUNT: Final = "gen_ai.request.choice.count"
GEN_AI_REQUEST_ENCODING_FORMATS: Final = "gen_ai.request.encoding_formats"
# Semconv's names for the service tier; no gen_ai.request.service_tier exists. Set for any
# provider: LiteLLM's `service_tier` is OpenAI's parameter, whoever serves it.
OPENAI_REQUEST_SERVICE_TIER: Final = "openai.request.service_tier"
OPENAI_RESPONSE_SERVICE_TIER: Final = "openai.response.service_tier"
GEN_AI_OUTPUT_TYPE: Final = "gen_ai.output.type"
GEN_AI_EMBEDDINGS_DIMENSION_COUNT: Final = "gen_ai.embeddings.dimension.count"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_TOOL_DEFINITIONS: Final = "gen_ai.tool.definitions"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
# The newer name; semconv v1.41 still says cache_creation (see DESIGN.md section 2).
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: Final = "gen_ai.usage.cache_write.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
USER_ID: Final = "user.id"
ERROR_TYPE: Final = "error.type"

# --- cost: no released convention; gen_ai.usage.cost is what Langfuse, Logfire, OpenLIT read -
GEN_AI_USAGE_COST: Final = "gen_ai.usage.cost"
SPENDMETER_COST_INPUT: Final = "spendmeter.cost.input"
SPENDMETER_COST_OUTPUT: Final = "spendmeter.cost.output"
SPENDMETER_COST_CACHE_READ: Final = "spendmeter.cost.cache_read"
SPENDMETER_COST_CACHE_WRITE: Final = "spendmeter.cost.cache_write"
# What is none of the parts above (tools, web search, surcharges, uplifts): the parts always
# add up to gen_ai.usage.cost.
SPENDMETER_COST_OTHER: Final = "spendmeter.cost.other"
SPENDMETER_PRICING_STATUS: Final = "spendmeter.pricing.status"
SPENDMETER_PRICING_SOURCE: Final = "spendmeter.pricing.source"
SPENDMETER_PRICING_MODEL: Final = "spendmeter.pricing.model"
SPENDMETER_METADATA_PREFIX: Final = "spendmeter.metadata."
# Router attempts, and the request span over them (whose cost is never gen_ai.usage.cost, so
# that backends summing that attribute over spans count each call once).
SPENDMETER_ROUTER_MODEL_GROUP: Final = "spendmeter.router.model_group"
SPENDMETER_ROUTER_ATTEMPT: Final = "spendmeter.router.attempt"
SPENDMETER_REQUEST_COST: Final = "spendmeter.request.cost"
SPENDMETER_BUDGET_NAME: Final = "spendmeter.budget.name"
SPENDMETER_BUDGET_SCOPE: Final = "spendmeter.budget.scope"
# On the span event a budget threshold crossing adds to the current span.
SPENDMETER_BUDGET_FRACTION: Final = "spendmeter.budget.fraction"
SPENDMETER_BUDGET_SPENT: Final = "spendmeter.budget.spent"
SPENDMETER_BUDGET_LIMIT: Final = "spendmeter.budget.limit"

# --- span events ---------------------------------------------------------------------------
EVENT_BUDGET_THRESHOLD: Final = "spendmeter.budget.threshold"

# --- values --------------------------------------------------------------------------------
PRICING_PRICED: Final = "priced"
PRICING_ESTIMATED: Final = "estimated"
PRICING_UNPRICED: Final = "unpriced"
SOURCE_LITELLM: Final = "litellm"
SOURCE_OVERRIDE: Final = "override"
SOURCE_PROVIDER: Final = "provider"  # a cost the provider reported on the response
TOKEN_TYPE_INPUT: Final = "input"
TOKEN_TYPE_OUTPUT: Final = "output"
# gen_ai.output.type well-known values.
OUTPUT_TYPE_TEXT: Final = "text"
OUTPUT_TYPE_JSON: Final = "json"
OUTPUT_TYPE_IMAGE: Final = "image"
OUTPUT_TYPE_SPEECH: Final = "speech"

OPERATION_CHAT: Final = "chat"
OPERATION_TEXT_COMPLETION: Final = "text_completion"
OPERATION_EMBEDDINGS: Final = "embeddings"
# No semconv operation fits these: LiteLLM's call type names them.
OPERATION_IMAGE_GENERATION: Final = "image_generation"
OPERATION_IMAGE_EDIT: Final = "image_edit"
OPERATION_IMAGE_VARIATION: Final = "image_variation"
OPERATION_VIDEO_GENERATION: Final = "video_generation"
OPERATION_VIDEO_REMIX: Final = "video_remix"
OPERATION_VIDEO_EDIT: Final = "video_edit"
OPERATION_VIDEO_EXTENSION: Final = "video_extension"
OPERATION_OCR: Final = "ocr"
OPERATION_DECISIONS: Final = "decisions"
OPERATION_SYSTEMONE: Final = "systemone"
OPERATION_EXTRACTION: Final = "extraction"
OPERATION_SEARCH: Final = "search"
OPERATION_TRANSCRIPTION: Final = "transcription"
OPERATION_SPEECH: Final = "speech"
OPERATION_RERANK: Final = "rerank"

# LiteLLM provider names -> gen_ai.provider.name well-known values; others pass through as is.
PROVIDER_NAMES: Final[dict[str, str]] = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "azure": "azure.ai.openai",
    "azure_text": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "anthropic": "anthropic",
    "anthropic_text": "anthropic",
    "bedrock": "aws.bedrock",
    "bedrock_converse": "aws.bedrock",
    "sagemaker": "aws.sagemaker",
    "vertex_ai": "gcp.vertex_ai",
    "vertex_ai_beta": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "cohere": "cohere",
    "cohere_chat": "cohere",
    "mistral": "mistral_ai",
    "groq": "groq",
    "deepseek": "deepseek",
    "perplexity": "perplexity",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
    "watsonx_text": "ibm.watsonx.ai",
}

# --- metrics -------------------------------------------------------------------------------
# The instrumentation scope of spendmeter's spans and call metrics (the module that was its
# `__name__` when the name was first published). Public: Prometheus exporters label every series
# with it (`otel_scope_name`), and the dashboards and alert rules select spendmeter's own
# gen_ai.client.* series by it, apart from another instrumentation's same-named ones.
INSTRUMENTATION_SCOPE: Final = "spendmeter.instrumentor"
METRIC_COST: Final = "gen_ai.client.cost"
METRIC_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
METRIC_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
METRIC_TIME_TO_FIRST_CHUNK: Final = "gen_ai.client.operation.time_to_first_chunk"
METRIC_UNPRICED_CALLS: Final = "spendmeter.calls.unpriced"
METRIC_BUDGET_SPENT: Final = "spendmeter.budget.spent"
METRIC_BUDGET_LIMIT: Final = "spendmeter.budget.limit"

# Bucket boundaries advised by the GenAI semantic conventions.
TOKEN_USAGE_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip

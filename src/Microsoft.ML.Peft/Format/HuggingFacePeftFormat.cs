using Microsoft.ML.Peft.Tasks.Classification;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using Microsoft.ML.Peft.Backbones;
using Microsoft.ML.Peft.Backbones.Bert;
using Microsoft.ML.Peft.Methods;
using Microsoft.ML.Peft.Tasks.TextClassification;
using Microsoft.ML.Peft.Torch;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Peft.Format;

/// <summary>
/// Hugging Face PEFT's adapter directory (<c>adapter_config.json</c>, <c>adapter_model.safetensors</c>, <c>README.md</c>),
/// both ways. The tensors are the model's saved state under PEFT's keys (<c>base_model.model.bert.encoder...lora_A.weight</c>,
/// the head as <c>base_model.model.classifier.weight</c>); the config has PEFT's fields for the method, <c>task_type</c>
/// <c>SEQ_CLS</c>, <c>modules_to_save</c> <c>["classifier"]</c>, and under <see cref="ExtraKey"/> what PEFT has no field for
/// (mean pooling, class names, sequence length, lower-casing, the base model's SHA-256).
/// </summary>
internal static class HuggingFacePeftFormat
{
    public const string ConfigFileName = "adapter_config.json";
    public const string WeightsFileName = "adapter_model.safetensors";
    public const string ReadmeFileName = "README.md";

    /// <summary>The config key of this library's own block.</summary>
    public const string ExtraKey = "microsoft_ml_peft";

    /// <summary>The Hugging Face Hub id of the embedded default model.</summary>
    public const string MiniLMHubId = "sentence-transformers/all-MiniLM-L6-v2";

    private const string ClassifierWeight = AdapterState.PeftPrefix + "classifier.weight";
    private const long MaxConfigBytes = 1 << 20;
    private const int DefaultMaxSequenceLength = 128;
    private const int DefaultBatchSize = 32;

    /// <summary>PeftConfig's fields shared by every method that say nothing about the adapter's arithmetic (or that are checked on their own).</summary>
    private static readonly HashSet<string> CommonKeys = new(StringComparer.Ordinal)
    {
        "peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping", "peft_version",
        "modules_to_save", "runtime_config", ExtraKey,
    };

    /// <summary>
    /// PEFT's defaults of each method's config fields (<c>tuners/*/config.py</c>). On export, the fields the method does not
    /// model are written with these values; on import, a field the method does not model must hold this value, and a field
    /// it models but the file leaves out takes it (PEFT's defaults differ from this library's: <c>lora_alpha</c> 8, <c>lora_dropout</c> 0).
    /// </summary>
    private static readonly Dictionary<string, string> PeftDefaults = new(StringComparer.Ordinal)
    {
        ["LORA"] = """
            {"r": 8, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": null, "exclude_modules": null, "fan_in_fan_out": false,
             "bias": "none", "use_rslora": false, "init_lora_weights": true, "layers_to_transform": null, "layers_pattern": null,
             "rank_pattern": {}, "alpha_pattern": {}, "megatron_config": null, "megatron_core": "megatron.core",
             "trainable_token_indices": null, "loftq_config": {}, "eva_config": null, "corda_config": null, "use_dora": false,
             "alora_invocation_tokens": null, "use_qalora": false, "qalora_group_size": 16, "layer_replication": null,
             "lora_bias": false, "target_parameters": null}
            """,
        ["IA3"] = """
            {"target_modules": null, "feedforward_modules": null, "exclude_modules": null, "fan_in_fan_out": false, "init_ia3_weights": true}
            """,
        ["VERA"] = """
            {"r": 256, "target_modules": null, "projection_prng_key": 0, "save_projection": true, "vera_dropout": 0.0, "d_initial": 0.1,
             "fan_in_fan_out": false, "bias": "none", "init_weights": true, "layers_to_transform": null, "layers_pattern": null}
            """,
        ["PROMPT_TUNING"] = """
            {"num_virtual_tokens": null, "token_dim": null, "num_transformer_submodules": null, "num_attention_heads": null,
             "num_layers": null, "prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": null, "tokenizer_name_or_path": null,
             "tokenizer_kwargs": null}
            """,
        ["PREFIX_TUNING"] = """
            {"num_virtual_tokens": null, "token_dim": null, "num_transformer_submodules": null, "num_attention_heads": null,
             "num_layers": null, "encoder_hidden_size": null, "prefix_projection": false}
            """,
    };

    /// <summary>PEFT's <c>target_modules</c> for BERT when the config leaves it null (<c>utils/constants.py</c>).</summary>
    private static readonly Dictionary<string, string[]> BertDefaultTargets = new(StringComparer.Ordinal)
    {
        ["LORA"] = new[] { "query", "value" },
        ["VERA"] = new[] { "query", "value" },
        ["IA3"] = new[] { "key", "value", "output.dense" },
    };

    /// <summary>
    /// Fields that only shape initialisation or training, or that PEFT derives from the base model (the tensors' shapes are
    /// checked against it): any value is accepted and none is taken over (the method's defaults and the base model's
    /// shape apply).
    /// </summary>
    private static readonly HashSet<string> InitialisationOnly = new(StringComparer.Ordinal)
    {
        "prompt_tuning_init", "prompt_tuning_init_text", "tokenizer_name_or_path", "tokenizer_kwargs", "init_ia3_weights",
        "init_weights", "d_initial", "megatron_core", "qalora_group_size", "vera_dropout",
        "token_dim", "num_transformer_submodules", "num_attention_heads", "num_layers",
    };

    /// <summary>Values of <c>init_lora_weights</c> that only choose how A and B start (others, such as <c>pissa</c>, change the base weights).</summary>
    private static readonly JsonNode[] HarmlessLoraInit = { JsonValue.Create(true), JsonValue.Create(false), JsonValue.Create("gaussian") };

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    // ---------------------------------------------------------------- export

    /// <summary>Writes <paramref name="model"/>'s adapter and head into <paramref name="directory"/> (created when missing; PEFT's files replaced).</summary>
    public static void Export(TextClassificationModel model, string directory)
    {
        if (string.IsNullOrWhiteSpace(directory)) throw new ArgumentException("The adapter directory is empty.", nameof(directory));
        var full = Path.GetFullPath(directory);
        if (File.Exists(full)) throw new IOException($"The adapter directory '{directory}' is a file.");
        if (model.BaseModel.Layers is int layers)
            throw new InvalidOperationException($"The model uses only the first {layers} encoder layer(s) of {model.BaseModel.Name} (BaseModelSource.WithLayers); " +
                "Hugging Face PEFT applies an adapter to the whole base model, so this model's adapter would change meaning there. Export the model to ONNX instead.");
        Directory.CreateDirectory(full);

        byte[] weights;
        var state = model.SavedState();
        try
        {
            weights = AdapterState.Save(state);
        }
        finally
        {
            foreach (var t in state) t.Value.Dispose();
        }
        var config = BuildConfig(model);
        var extra = config[ExtraKey]!.Deserialize<ExtraBlock>()!;
        WriteAtomically(Path.Combine(full, WeightsFileName), weights);
        WriteAtomically(Path.Combine(full, ConfigFileName), Encoding.UTF8.GetBytes(config.ToJsonString(Indented) + "\n"));
        WriteAtomically(Path.Combine(full, ReadmeFileName), Encoding.UTF8.GetBytes(Readme(config, extra)));
    }

    /// <summary>The <c>adapter_config.json</c> of a model, keys sorted as PEFT writes them.</summary>
    internal static JsonObject BuildConfig(TextClassificationModel model)
    {
        var saved = model.Adapted.Method.SavedOptions;
        var type = saved.PeftType;
        var fields = new SortedDictionary<string, JsonNode?>(StringComparer.Ordinal);
        if (PeftDefaults.TryGetValue(type, out var defaults))
            foreach (var (key, value) in JsonNode.Parse(defaults)!.AsObject()) fields[key] = value?.DeepClone();
        foreach (var (key, value) in MethodRegistry.ToJson(saved)) fields[key] = value?.DeepClone();
        // The options' own .NET property (an override the serializer does not skip) is no PEFT field: peft_type says it.
        fields.Remove(nameof(PeftMethodOptions.PeftType));
        // LoRA+ is an optimizer setting (PEFT's create_loraplus_optimizer), not a LoraConfig field PEFT would accept.
        fields.Remove("loraplus_lr_ratio");

        // PEFT reads a list of target modules as names or name suffixes (and "all-linear" only as a plain string, which on
        // BertForSequenceClassification would also select the pooler this task does not use): write the adapted modules
        // themselves unless the patterns mean exactly those to PEFT too.
        if (fields.TryGetValue("target_modules", out var targets) && targets is JsonArray patterns)
        {
            var names = patterns.Select(p => p?.GetValue<string>() ?? "").ToList();
            var peftSelection = model.Adapted.Backbone.Linears().Select(l => l.Name).Where(n => names.Any(p => MatchesPeftName(n, p))).ToList();
            if (!peftSelection.SequenceEqual(model.Adapted.AdaptedModules))
                fields["target_modules"] = new JsonArray(model.Adapted.AdaptedModules.Select(m => (JsonNode?)JsonValue.Create(m)).ToArray());
        }

        var reference = model.BaseModel;
        fields["peft_type"] = type;
        fields["task_type"] = "SEQ_CLS";
        fields["modules_to_save"] = new JsonArray("classifier");
        fields["base_model_name_or_path"] = reference.Kind switch
        {
            BaseModelKind.EmbeddedMiniLM => MiniLMHubId,
            BaseModelKind.HuggingFace => reference.Path,
            _ => null, // an ONNX file is no Transformers model: PEFT writes null then
        };
        fields["revision"] = null;
        fields["inference_mode"] = true;
        fields["auto_mapping"] = null;
        var label = model.Label;
        fields[ExtraKey] = JsonSerializer.SerializeToNode(new ExtraBlock
        {
            ClassNames = label.ClassNames.ToList(),
            LabelValueKind = label.ValueKind,
            TextPair = model.Settings.Sentence2ColumnName is not null,
            MaxSequenceLength = model.Settings.MaxSequenceLength,
            BatchSize = model.Settings.BatchSize,
            LowerCase = reference.LowerCase,
            BaseModel = new ExtraBaseModel
            {
                Name = reference.Name,
                Kind = reference.Kind.ToString(),
                Sha256 = reference.Sha256,
                Size = reference.Size,
                Description = reference.ToString(),
            },
            BackboneConfig = model.Config,
            AdaptedModules = model.Adapted.AdaptedModules.ToList(),
        });
        var config = new JsonObject();
        foreach (var (key, value) in fields) config[key] = value;
        return config;
    }

    private static string Readme(JsonObject config, ExtraBlock extra)
    {
        string type = config["peft_type"]!.GetValue<string>();
        string baseName = config["base_model_name_or_path"]?.GetValue<string>() ?? extra.BaseModel.Name;
        var classes = string.Join(", ", extra.ClassNames.Select((c, i) => $"{i}: `{c}`"));
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"""
            ---
            library_name: peft
            base_model: {baseName}
            pipeline_tag: text-classification
            ---

            # {type} adapter for text classification

            Exported by Microsoft.ML.Peft (ML.NET) in Hugging Face PEFT's format: `adapter_config.json` and
            `adapter_model.safetensors` (the adapter under PEFT's keys, `base_model.model.bert...`, and the classification
            head as `base_model.model.classifier.weight` / `.bias`, saved through `modules_to_save`).

            - Base model: {extra.BaseModel.Description}, SHA-256 `{extra.BaseModel.Sha256}` of its weights file.
            - Classes in score order: {classes}.
            - Input: WordPiece tokens of the base model's vocabulary, {(extra.LowerCase ? "lower-cased with accents stripped (uncased)" : "cased")},
              `[CLS] text [SEP]`{(extra.TextPair ? " `second text [SEP]`" : "")}, at most {extra.MaxSequenceLength} tokens.

            ## Scoring: mean pooling, not the [CLS] pooler

            The head reads the **mean of the encoder's last hidden states over the attention mask** (as sentence-transformers
            models are used), not the pooled `[CLS]` vector that Transformers' `BertForSequenceClassification` feeds its
            classifier. To reproduce the scores in Python, run the encoder with the adapter applied and pool yourself:

            ```python
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
            from peft import PeftModel

            base = AutoModelForSequenceClassification.from_pretrained("{baseName}", num_labels={extra.ClassNames.Count})
            model = PeftModel.from_pretrained(base, "path/to/this/directory").eval()
            tokenizer = AutoTokenizer.from_pretrained("{baseName}")
            batch = tokenizer(texts, padding=True, truncation=True, max_length={extra.MaxSequenceLength}, return_tensors="pt")
            inner = model.base_model.model
            hidden = inner.bert(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            probabilities = inner.classifier(pooled).softmax(-1)
            ```

            The `{ExtraKey}` block of `adapter_config.json` holds these facts for programs (PEFT ignores unknown keys).
            In .NET: `mlContext.Model.ImportPeftAdapter(directory, options)` or `mlnet-peft import-adapter --adapter DIR --output model.zip`.

            """);
        return text.ToString();
    }

    private static void WriteAtomically(string path, byte[] bytes)
    {
        var temporary = Path.Combine(Path.GetDirectoryName(path)!, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        try
        {
            File.WriteAllBytes(temporary, bytes);
            File.Move(temporary, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(temporary)) File.Delete(temporary);
        }
    }

    // ---------------------------------------------------------------- import

    /// <summary>A read adapter directory: config (checked for shape), tensors (not yet checked), this library's block if any.</summary>
    internal sealed class AdapterDirectory
    {
        public required string Source { get; init; }
        public required JsonObject Config { get; init; }
        public required string PeftType { get; init; }
        public required byte[] Weights { get; init; }
        public ExtraBlock? Extra { get; init; }
        /// <summary>Rows of the classifier's weight: the class count.</summary>
        public required int ClassCount { get; init; }

        /// <summary>The class names in score order: the recorded ones, else "0", "1", ...</summary>
        public IReadOnlyList<string> ClassNames =>
            Extra?.ClassNames ?? Enumerable.Range(0, ClassCount).Select(i => i.ToString(CultureInfo.InvariantCulture)).ToList();
    }

    /// <summary>Reads and checks <c>adapter_config.json</c> and reads <c>adapter_model.safetensors</c>.</summary>
    public static AdapterDirectory Read(string directory)
    {
        if (string.IsNullOrWhiteSpace(directory)) throw new ArgumentException("The adapter directory is empty.", nameof(directory));
        var full = Path.GetFullPath(directory);
        if (!Directory.Exists(full)) throw new DirectoryNotFoundException($"The adapter directory '{directory}' does not exist.");
        var source = $"The PEFT adapter '{directory}'";
        var configPath = Path.Combine(full, ConfigFileName);
        var configBytes = ReadRegularFile(configPath, MaxConfigBytes, $"{source} has no {ConfigFileName}");
        JsonObject config;
        try
        {
            // JsonNode reads strings lazily: bytes that are not UTF-8 would fail later, on first use, with another exception.
            _ = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true).GetCharCount(configBytes);
        }
        catch (DecoderFallbackException e)
        {
            throw new InvalidDataException($"{source}: {ConfigFileName} is not UTF-8 text: {e.Message}", e);
        }
        try
        {
            config = JsonNode.Parse(configBytes, documentOptions: new JsonDocumentOptions { MaxDepth = 32 }) as JsonObject
                ?? throw new InvalidDataException($"{source}: {ConfigFileName} is not a JSON object.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: {ConfigFileName} is not valid JSON: {e.Message}", e);
        }

        var type = Text(config, "peft_type", source) ?? throw new InvalidDataException($"{source}: {ConfigFileName} has no peft_type.");
        if (MethodRegistry.CreateDefault(type) is null)
            throw new InvalidDataException($"{source}: peft_type '{type}' is not known to this library (known: {string.Join(", ", MethodRegistry.PeftTypes.Order(StringComparer.Ordinal))}).");
        var task = Text(config, "task_type", source);
        if (task is not null and not "SEQ_CLS")
            throw new InvalidDataException($"{source}: task_type '{task}' is not text classification; only SEQ_CLS adapters (or task_type null) can be imported.");
        if (config["modules_to_save"] is JsonNode modules)
        {
            if (modules is not JsonArray list) throw new InvalidDataException($"{source}: modules_to_save must be a list of module names.");
            foreach (var module in list)
            {
                var name = module is JsonValue v && v.TryGetValue<string>(out var s) ? s : module?.ToJsonString();
                if (name is not ("classifier" or "score"))
                    throw new InvalidDataException($"{source}: modules_to_save names '{name}'; only the classification head ('classifier') can be imported.");
            }
        }

        ExtraBlock? extra = null;
        if (config[ExtraKey] is JsonNode block)
        {
            try
            {
                extra = block.Deserialize<ExtraBlock>() ?? throw new InvalidDataException($"{source}: the {ExtraKey} block is empty.");
            }
            catch (Exception e) when (e is JsonException or InvalidOperationException)
            {
                throw new InvalidDataException($"{source}: the {ExtraKey} block cannot be read: {e.Message}", e);
            }
            extra.Validate(source);
        }

        var weightsPath = Path.Combine(full, WeightsFileName);
        if (!File.Exists(weightsPath) && File.Exists(Path.Combine(full, "adapter_model.bin")))
            throw new InvalidDataException($"{source} holds adapter_model.bin (a pickle file), which is not read for safety; save it with safe_serialization=True (PEFT's default) to get {WeightsFileName}.");
        var weights = ReadRegularFile(weightsPath, Array.MaxLength, $"{source} has no {WeightsFileName}");
        var shapes = ReadShapes(weights, source);
        if (!shapes.TryGetValue(ClassifierWeight, out var head) || head.Length != 2)
            throw new InvalidDataException($"{source}: the adapter has no classification head ('{ClassifierWeight}', a matrix); export it with modules_to_save=[\"classifier\"].");
        if (head[0] < 2 || head[0] > 100_000) throw new InvalidDataException($"{source}: '{ClassifierWeight}' has {head[0]} rows; 2 to 100000 classes are supported.");
        int classes = (int)head[0];
        if (extra is not null && extra.ClassNames.Count != classes)
            throw new InvalidDataException($"{source}: the {ExtraKey} block names {extra.ClassNames.Count} classes but '{ClassifierWeight}' has {classes} rows.");
        return new AdapterDirectory { Source = source, Config = config, PeftType = type, Weights = weights, Extra = extra, ClassCount = classes };
    }

    /// <summary>
    /// The method options of the adapter for <paramref name="baseModel"/>, after checking the base model is the one the
    /// adapter was trained on. Fields the method does not model must hold PEFT's default; fields it models and the file
    /// leaves out take PEFT's default.
    /// </summary>
    public static PeftMethodOptions ResolveMethod(AdapterDirectory adapter, LoadedBaseModel baseModel, bool checkBaseModelName)
    {
        CheckBaseModel(adapter, baseModel, checkBaseModelName);
        var source = adapter.Source;
        var type = adapter.PeftType;
        var modelled = MethodRegistry.ToJson(MethodRegistry.CreateDefault(type)!).Select(p => p.Key).ToHashSet(StringComparer.Ordinal);
        var defaults = PeftDefaults.TryGetValue(type, out var json) ? JsonNode.Parse(json)!.AsObject() : new JsonObject();

        var method = new JsonObject { ["peft_type"] = type };
        foreach (var (key, value) in adapter.Config)
        {
            if (CommonKeys.Contains(key)) continue;
            if (key == "init_lora_weights")
            {
                // How A and B started does not matter to a trained adapter; one trained on changed base weights does.
                if (HarmlessLoraInit.Any(h => SameValue(h, value))) continue;
                throw new InvalidDataException($"{source}: {ConfigFileName} sets init_lora_weights to {value?.ToJsonString() ?? "null"}: such an adapter (PiSSA, OLoRA...) " +
                    "was trained on changed base weights, which this library cannot rebuild. Convert it to plain LoRA in PEFT first (path_initial_model_for_weight_conversion).");
            }
            // How an adapter was initialised does not matter once it is trained (a TEXT-initialised prompt imports fine).
            if (InitialisationOnly.Contains(key)) continue;
            if (modelled.Contains(key))
            {
                method[key] = value?.DeepClone();
                continue;
            }
            bool isDefault = defaults.TryGetPropertyValue(key, out var peftDefault) ? SameValue(peftDefault, value) : IsEmpty(value);
            if (!isDefault)
                throw new InvalidDataException($"{source}: {ConfigFileName} sets '{key}' to {value?.ToJsonString() ?? "null"}, which this library's {type} does not support " +
                    $"(only PEFT's default {(defaults.TryGetPropertyValue(key, out var d) ? d?.ToJsonString() ?? "null" : "(unset)")} is accepted).");
        }
        foreach (var (key, value) in defaults)
            if (modelled.Contains(key) && !method.ContainsKey(key)) method[key] = value?.DeepClone();

        if (method.ContainsKey("target_modules")) method["target_modules"] = TargetModules(method["target_modules"], type, baseModel, source);
        try
        {
            return MethodRegistry.FromJson(method, source);
        }
        catch (InvalidOperationException e)
        {
            throw new InvalidDataException($"{source}: the {type} options cannot be read: {e.Message}", e);
        }
    }

    /// <summary>PEFT's <c>target_modules</c> (null, a regular expression string, <c>all-linear</c> or a list) as this library's list.</summary>
    private static JsonNode TargetModules(JsonNode? value, string type, LoadedBaseModel baseModel, string source)
    {
        if (value is null)
        {
            if (!BertDefaultTargets.TryGetValue(type, out var defaults))
                throw new InvalidDataException($"{source}: target_modules is null and PEFT has no default for {type} on BERT.");
            return new JsonArray(defaults.Select(d => (JsonNode?)JsonValue.Create(d)).ToArray());
        }
        if (value is JsonArray) return value.DeepClone();
        if (value is not JsonValue scalar || !scalar.TryGetValue<string>(out var text))
            throw new InvalidDataException($"{source}: target_modules must be a list of names or a string, found {value.ToJsonString()}.");
        if (string.Equals(text, ModuleMatcher.AllLinear, StringComparison.OrdinalIgnoreCase)) return new JsonArray(ModuleMatcher.AllLinear);
        // A string is a regular expression that PEFT matches against whole module names of the task model (bert.encoder...).
        Regex regex;
        try
        {
            regex = new Regex("^(?:" + text + ")$", RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{source}: target_modules '{text}' is not a valid regular expression: {e.Message}", e);
        }
        var backbone = baseModel.CreateBackbone();
        List<string> names;
        try
        {
            names = backbone.Linears().Select(l => l.Name).Where(n => regex.IsMatch(backbone.Name + "." + n) || regex.IsMatch(n)).ToList();
        }
        finally
        {
            backbone.Module.Dispose();
        }
        if (names.Count == 0) throw new InvalidDataException($"{source}: target_modules '{text}' matches no Linear layer of the base model.");
        return new JsonArray(names.Select(n => (JsonNode?)JsonValue.Create(n)).ToArray());
    }

    /// <summary>PEFT's list matching: the module's name, or a suffix of it after a dot.</summary>
    private static bool MatchesPeftName(string module, string pattern) =>
        module == pattern || module.EndsWith("." + pattern, StringComparison.Ordinal);

    private static void CheckBaseModel(AdapterDirectory adapter, LoadedBaseModel baseModel, bool checkName)
    {
        var given = $"{baseModel.Source} (SHA-256 {baseModel.Sha256})";
        if (adapter.Extra is { } extra)
        {
            if (!string.Equals(extra.BaseModel.Sha256, baseModel.Sha256, StringComparison.OrdinalIgnoreCase))
                throw new InvalidDataException($"{adapter.Source} was trained on the base model {extra.BaseModel.Description} (SHA-256 {extra.BaseModel.Sha256}), " +
                    $"but the base model given is {given}. Pass the base model it was trained on.");
            if (extra.LowerCase != baseModel.Source.LowerCase)
                throw new InvalidDataException($"{adapter.Source} was trained on {(extra.LowerCase ? "lower-cased" : "cased")} text, but the base model given is read " +
                    $"{(baseModel.Source.LowerCase ? "lower-cased" : "cased")} ({baseModel.Source}); set lowerCase accordingly.");
            return;
        }
        var recorded = Text(adapter.Config, "base_model_name_or_path", adapter.Source);
        if (!checkName || string.IsNullOrWhiteSpace(recorded)) return;
        if (!NamesAgree(recorded, baseModel.Source))
            throw new InvalidDataException($"{adapter.Source} was trained on the base model '{recorded}' (base_model_name_or_path), but the base model given is {given}. " +
                "Pass that base model, or turn the name check off (CheckBaseModelName = false; --ignore-base-model-name) when it is the same model under another name.");
    }

    /// <summary>Whether PEFT's recorded base-model name plausibly names <paramref name="source"/>: the last part of the name or path equals its name.</summary>
    private static bool NamesAgree(string recorded, BaseModelSource source)
    {
        static string Last(string path) => path.TrimEnd('/', '\\').Split('/', '\\').Last();
        var name = Last(recorded);
        var candidates = new List<string> { source.Name };
        if (source.Kind == BaseModelKind.EmbeddedMiniLM) candidates.Add(Last(MiniLMHubId));
        if (source.Path is not null)
        {
            candidates.Add(Last(source.Path));
            candidates.Add(Path.GetFileNameWithoutExtension(source.Path));
            if (source.Kind == BaseModelKind.Onnx && Path.GetDirectoryName(source.Path) is { } folder) candidates.Add(Last(folder));
        }
        return candidates.Any(c => string.Equals(c, name, StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>The class names and their key kind for the model's label: recorded ones, else "0", "1", ... as text keys.</summary>
    public static (string? Kind, List<string>? Values) Label(AdapterDirectory adapter) =>
        adapter.Extra is { } extra
            ? (extra.LabelValueKind, extra.LabelValueKind is null ? null : extra.ClassNames.ToList())
            : ("Text", adapter.ClassNames.ToList());

    /// <summary>Builds the scoring model of an adapter directory.</summary>
    public static TextClassificationModel Import(string directory, PeftAdapterImportOptions options, IChannel ch)
    {
        options.Validate();
        var adapter = Read(directory);
        var baseModel = (options.BaseModel ?? BaseModelSource.MiniLM()).Load();
        var method = ResolveMethod(adapter, baseModel, options.CheckBaseModelName);
        int maxPositions = baseModel.Config.MaxPositionEmbeddings;
        int maxLength = options.MaxSequenceLength ?? adapter.Extra?.MaxSequenceLength ?? Math.Min(DefaultMaxSequenceLength, maxPositions);
        if (maxLength > maxPositions && options.MaxSequenceLength is null)
            throw new InvalidDataException($"{adapter.Source}: the {ExtraKey} block's max_sequence_length {maxLength} exceeds the base model's position table ({maxPositions}).");
        if (maxLength > maxPositions)
            throw new ArgumentOutOfRangeException(nameof(PeftAdapterImportOptions.MaxSequenceLength), maxLength, $"MaxSequenceLength exceeds the base model's position table ({maxPositions}).");
        var (kind, values) = Label(adapter);
        var settings = new TextClassificationSettings
        {
            Sentence1ColumnName = options.Sentence1ColumnName,
            Sentence2ColumnName = adapter.Extra?.TextPair == true ? options.Sentence2ColumnName : null,
            ScoreColumnName = options.ScoreColumnName,
            PredictedLabelColumnName = options.PredictedLabelColumnName,
            MaxSequenceLength = maxLength,
            BatchSize = options.BatchSize ?? adapter.Extra?.BatchSize ?? DefaultBatchSize,
            ClassCount = adapter.ClassCount,
            LabelValueKind = kind,
            LabelValues = values,
        };
        if (adapter.Extra is null)
            ch.Warning($"{adapter.Source} does not say how its head pools; it is scored with mean pooling over the attention mask, as this library trains (an adapter trained " +
                "with BertForSequenceClassification's [CLS] pooler scores differently).");
        var device = TorchBackend.LoadDevice(options.Device, ch);
        // New parameters are overwritten by the adapter's; a local generator keeps libtorch's global one untouched.
        using var generator = new TorchSharp.torch.Generator(0);
        TextClassificationModel model;
        try
        {
            model = new TextClassificationModel(settings, baseModel, method, embedBaseModel: false, device, generator);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{adapter.Source} does not fit the base model {baseModel.Source}: {e.Message}", e);
        }
        try
        {
            LoadTensors(adapter, model);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Copies the adapter's tensors into <paramref name="model"/> (built from the adapter's options), strictly: every key, shape and value checked.</summary>
    public static void LoadTensors(AdapterDirectory adapter, TextClassificationModel model)
    {
        if (adapter.Extra is { AdaptedModules.Count: > 0 } extra && !model.Adapted.AdaptedModules.SequenceEqual(extra.AdaptedModules))
            throw new InvalidDataException($"{adapter.Source}: the adapter was trained on modules [{string.Join(", ", extra.AdaptedModules.Take(8))}] " +
                $"but its options select [{string.Join(", ", model.Adapted.AdaptedModules.Take(8))}] on this base model.");
        AdapterState.Load(adapter.Weights, model.LoadedParameters(), adapter.Source);
    }

    // ---------------------------------------------------------------- helpers

    private static string? Text(JsonObject config, string key, string source)
    {
        var node = config[key];
        if (node is null) return null;
        if (node is JsonValue value && value.TryGetValue<string>(out var text)) return text;
        throw new InvalidDataException($"{source}: {ConfigFileName} field '{key}' must be a string, found {node.ToJsonString()}.");
    }

    /// <summary>JSON equality with numbers compared by value (8 equals 8.0).</summary>
    private static bool SameValue(JsonNode? a, JsonNode? b)
    {
        if (a is null || b is null) return a is null && b is null;
        if (a is JsonValue va && b is JsonValue vb && va.GetValueKind() == JsonValueKind.Number && vb.GetValueKind() == JsonValueKind.Number)
            return va.GetValue<double>() == vb.GetValue<double>();
        return JsonNode.DeepEquals(a, b);
    }

    /// <summary>A value that means "not set" for a field PEFT added after this library's table: null, false, empty list or object.</summary>
    private static bool IsEmpty(JsonNode? value) => value switch
    {
        null => true,
        JsonArray array => array.Count == 0,
        JsonObject obj => obj.Count == 0,
        JsonValue v => v.GetValueKind() == JsonValueKind.False,
        _ => false,
    };

    private static byte[] ReadRegularFile(string path, long maxBytes, string missing)
    {
        var info = new FileInfo(path);
        if (!info.Exists) throw new FileNotFoundException($"{missing} ('{path}').", path);
        if (info.Attributes.HasFlag(FileAttributes.Device)) throw new InvalidDataException($"'{path}' is a device, not a regular file.");
        if (info.Length <= 0 || info.Length > maxBytes) throw new InvalidDataException($"'{path}' has {info.Length:N0} bytes; a regular file of 1 to {maxBytes:N0} bytes is expected.");
        return File.ReadAllBytes(path);
    }

    /// <summary>The tensor shapes a safetensors header declares (bounded; the strict check against the model comes later).</summary>
    private static Dictionary<string, long[]> ReadShapes(byte[] bytes, string source)
    {
        if (bytes.Length < 8) throw new InvalidDataException($"{source}: {WeightsFileName} is too short to be safetensors.");
        ulong headerLength = BitConverter.ToUInt64(bytes, 0);
        if (headerLength > (ulong)(bytes.Length - 8) || headerLength > 100_000_000)
            throw new InvalidDataException($"{source}: the safetensors header of {WeightsFileName} claims {headerLength:N0} bytes, more than the file holds.");
        try
        {
            using var header = JsonDocument.Parse(bytes.AsMemory(8, (int)headerLength), new JsonDocumentOptions { MaxDepth = 8 });
            var result = new Dictionary<string, long[]>(StringComparer.Ordinal);
            foreach (var entry in header.RootElement.EnumerateObject())
            {
                if (entry.Name == "__metadata__") continue;
                result[entry.Name] = entry.Value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray();
            }
            return result;
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{source}: the safetensors header of {WeightsFileName} is malformed: {e.Message}", e);
        }
    }

    /// <summary>This library's block in <c>adapter_config.json</c>: what PEFT's config has no field for.</summary>
    internal sealed class ExtraBlock
    {
        [JsonPropertyName("format_version")] public int FormatVersion { get; set; } = 1;
        [JsonPropertyName("task")] public string Task { get; set; } = TextClassificationSettings.TaskName;
        [JsonPropertyName("pooling")] public string Pooling { get; set; } = "mean";
        [JsonPropertyName("pooling_description")] public string PoolingDescription { get; set; } =
            "mean of the encoder's last hidden states over the attention mask (not BertForSequenceClassification's [CLS] pooler), then classifier";
        [JsonPropertyName("class_names")] public List<string> ClassNames { get; set; } = new();
        [JsonPropertyName("label_value_kind")] public string? LabelValueKind { get; set; }
        [JsonPropertyName("text_pair")] public bool TextPair { get; set; }
        [JsonPropertyName("max_sequence_length")] public int MaxSequenceLength { get; set; }
        [JsonPropertyName("batch_size")] public int? BatchSize { get; set; }
        [JsonPropertyName("lower_case")] public bool LowerCase { get; set; } = true;
        [JsonPropertyName("base_model")] public ExtraBaseModel BaseModel { get; set; } = new();
        [JsonPropertyName("backbone_config")] public BertConfig? BackboneConfig { get; set; }
        [JsonPropertyName("adapted_modules")] public List<string> AdaptedModules { get; set; } = new();

        public void Validate(string source)
        {
            string where = $"{source}: the {ExtraKey} block";
            // JSON null reaches properties declared non-null: a damaged file can hold it.
            if (Task is null || Pooling is null || ClassNames is null || BaseModel?.Sha256 is null || AdaptedModules is null || AdaptedModules.Any(m => m is null))
                throw new InvalidDataException($"{where} holds null where task, pooling, class_names, base_model (with its sha256) and adapted_modules are expected.");
            if (FormatVersion != 1) throw new InvalidDataException($"{where} has format_version {FormatVersion}; this library reads version 1. Upgrade Microsoft.ML.Peft.");
            if (Task != TextClassificationSettings.TaskName) throw new InvalidDataException($"{where} is for task '{Task}', not {TextClassificationSettings.TaskName}.");
            if (Pooling != "mean") throw new InvalidDataException($"{where} names pooling '{Pooling}'; only 'mean' is known.");
            if (ClassNames.Count is < 2 or > 100_000 || ClassNames.Any(c => c is null || c.Length > 1024))
                throw new InvalidDataException($"{where} has {ClassNames.Count} class names; 2 to 100000 names are expected.");
            if (MaxSequenceLength is < 3 or > 65_536) throw new InvalidDataException($"{where} has max_sequence_length {MaxSequenceLength}.");
            if (BatchSize is <= 0 or > 65_536) throw new InvalidDataException($"{where} has batch_size {BatchSize}.");
            if (BaseModel.Sha256.Length != 64 || !BaseModel.Sha256.All(Uri.IsHexDigit)) throw new InvalidDataException($"{where} has no valid base-model SHA-256.");
            if (AdaptedModules.Count > 100_000) throw new InvalidDataException($"{where} lists {AdaptedModules.Count} adapted modules.");
            try
            {
                _ = new LabelInfo(ClassNames.Count, LabelValueKind, LabelValueKind is null ? null : ClassNames);
            }
            catch (InvalidDataException e)
            {
                throw new InvalidDataException($"{where}: {e.Message}", e);
            }
        }
    }

    /// <summary>The base model's identity in <see cref="ExtraBlock"/>.</summary>
    internal sealed class ExtraBaseModel
    {
        [JsonPropertyName("name")] public string Name { get; set; } = "";
        [JsonPropertyName("kind")] public string Kind { get; set; } = "";
        [JsonPropertyName("sha256")] public string Sha256 { get; set; } = "";
        [JsonPropertyName("size")] public long Size { get; set; }
        [JsonPropertyName("description")] public string Description { get; set; } = "";
    }
}

using PeftServing;

// Serves the PEFT text classifiers of a folder (one adapter per model .zip, named after the file):
//   dotnet run -c Release --project examples/Serving -- --models path/to/models
//   curl -s localhost:5080/predict/sst2 -H 'Content-Type: application/json' -d '{"text": "a gripping, funny film"}'
// See ServingOptions for the settings (appsettings.json, section "Serving").
var app = ServingApp.Build(args);
app.Run();

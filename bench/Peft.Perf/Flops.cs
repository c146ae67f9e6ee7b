namespace Peft.Perf;

/// <summary>
/// Model FLOPs of a MiniLM training step (multiply-adds count 2). Forward: per layer the four attention projections
/// (4 · 2BSH²), the feed-forward pair (2 · 2BSHI), attention scores and their product with the values (2 · 2BS²H).
/// A LoRA step also needs the gradient with respect to every layer's activations (the adapters sit in every layer):
/// about one more forward's worth, plus the adapters' own weight gradients. Full fine-tuning adds the base weights'
/// gradients: about two forwards' worth in the backward pass.
/// </summary>
internal static class Flops
{
    public const int Hidden = 384, Intermediate = 1536, Layers = 6, Rank = 8, AdaptedPerLayer = 2;

    public static double Forward(int batch, int seq)
    {
        double tokens = (double)batch * seq;
        double projections = 4 * 2 * tokens * Hidden * Hidden;
        double feedForward = 2 * 2 * tokens * Hidden * Intermediate;
        double attention = 2 * 2 * tokens * seq * Hidden;
        return Layers * (projections + feedForward + attention);
    }

    public static double LoraForward(int batch, int seq) => Layers * AdaptedPerLayer * 2.0 * batch * seq * (Hidden * Rank + Rank * Hidden);

    public static double LoraStep(int batch, int seq) => 2 * Forward(batch, seq) + 3 * LoraForward(batch, seq);

    public static double FullStep(int batch, int seq) => 3 * Forward(batch, seq);
}

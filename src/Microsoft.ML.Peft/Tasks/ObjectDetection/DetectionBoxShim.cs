namespace Microsoft.ML.Peft.Tasks.ObjectDetection;

/// <summary>A box in pixel coordinates of its image: (XMin, YMin) top-left, (XMax, YMax) bottom-right; Class is a 0-based class index; Score 1 for ground truth.</summary>
public readonly record struct DetectionBox(float XMin, float YMin, float XMax, float YMax, int Class, float Score = 1f)
{
    /// <summary>XMax - XMin.</summary>
    public float Width => XMax - XMin;

    /// <summary>YMax - YMin.</summary>
    public float Height => YMax - YMin;

    /// <summary>Width x Height, 0 for an empty box.</summary>
    public float Area => Math.Max(0, Width) * Math.Max(0, Height);
}

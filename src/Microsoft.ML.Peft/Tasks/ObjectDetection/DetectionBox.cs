namespace Microsoft.ML.Peft.Tasks.ObjectDetection;

/// <summary>A box in pixel coordinates of its image: (XMin, YMin) top-left, (XMax, YMax) bottom-right; Class is a 0-based class index; Score 1 for ground truth.</summary>
/// <param name="XMin">The left edge, in pixels from the image's left edge.</param>
/// <param name="YMin">The top edge, in pixels from the image's top edge.</param>
/// <param name="XMax">The right edge, in pixels from the image's left edge (greater than <paramref name="XMin"/> for a valid box).</param>
/// <param name="YMax">The bottom edge, in pixels from the image's top edge (greater than <paramref name="YMin"/> for a valid box).</param>
/// <param name="Class">The 0-based index of the box's class in the data set's class list.</param>
/// <param name="Score">The detector's confidence, from 0 to 1; 1 for ground truth.</param>
public readonly record struct DetectionBox(float XMin, float YMin, float XMax, float YMax, int Class, float Score = 1f)
{
    /// <summary>The width, <c>XMax - XMin</c> (negative for an inverted box).</summary>
    public float Width => XMax - XMin;

    /// <summary>The height, <c>YMax - YMin</c> (negative for an inverted box).</summary>
    public float Height => YMax - YMin;

    /// <summary>The area, <c>Width * Height</c>, or 0 when the box is empty or inverted.</summary>
    public float Area => Math.Max(0f, Width) * Math.Max(0f, Height);
}

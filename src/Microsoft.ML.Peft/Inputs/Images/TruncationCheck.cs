using System.Buffers.Binary;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.Formats.Bmp;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Webp;

namespace Microsoft.ML.Peft.Inputs.Images;

/// <summary>
/// Finds cut-off image files that ImageSharp decodes without complaint, filling in what is missing (JPEG, GIF, BMP,
/// WebP): a partly blank image would otherwise be trained on silently. PNG and TIFF decoders already fail on such
/// files. Each check reads only the file's structure, never the pixel data, and errs on the side of accepting files
/// whose structure it does not follow.
/// </summary>
internal static class TruncationCheck
{
    /// <summary>Why the file looks cut off, or null when it looks whole.</summary>
    /// <param name="bytes">The encoded file.</param>
    /// <param name="format">The format ImageSharp detected.</param>
    public static string? Problem(ReadOnlySpan<byte> bytes, IImageFormat format) => format switch
    {
        JpegFormat => JpegReachesEnd(bytes) ? null : "a truncated JPEG: it ends before its end-of-image marker",
        GifFormat => GifFirstImageComplete(bytes) ? null : "a truncated GIF: it ends within its first image's data",
        BmpFormat => BmpMissing(bytes) is { } missing ? $"a truncated BMP: {missing} bytes of its pixel data are missing" : null,
        WebpFormat => WebpMissing(bytes) is { } missing ? $"a truncated WebP: {missing} of the bytes its header declares are missing" : null,
        _ => null,
    };

    /// <summary>
    /// Whether a JPEG's data goes on to its end-of-image marker (<c>FF D9</c>): the marker segments before the first
    /// start-of-scan are skipped by their lengths (an EXIF thumbnail inside them has its own end marker), and after it
    /// <c>FF D9</c> cannot occur in entropy-coded data (an <c>FF</c> there is followed by 00 or a restart marker), so
    /// finding it means the file is whole.
    /// </summary>
    internal static bool JpegReachesEnd(ReadOnlySpan<byte> bytes)
    {
        int at = 2;
        while (at + 4 <= bytes.Length && bytes[at] == 0xFF)
        {
            byte marker = bytes[at + 1];
            if (marker == 0xDA) break;
            if (marker == 0xFF) { at++; continue; }
            if (marker is 0x01 or 0xD8 or (>= 0xD0 and <= 0xD7)) { at += 2; continue; }
            at += 2 + ((bytes[at + 2] << 8) | bytes[at + 3]);
        }
        return at < bytes.Length && bytes[at..].IndexOf((ReadOnlySpan<byte>)[0xFF, 0xD9]) >= 0;
    }

    /// <summary>Whether a GIF holds the whole data of its first image (the one decoded): its sub-blocks up to the empty one that ends them.</summary>
    internal static bool GifFirstImageComplete(ReadOnlySpan<byte> bytes)
    {
        int at = 13; // header (6) and logical screen descriptor (7)
        if (bytes.Length < at) return false;
        byte screen = bytes[10];
        if ((screen & 0x80) != 0) at += 3 << ((screen & 7) + 1);
        while (true)
        {
            if (at >= bytes.Length) return false;
            switch (bytes[at])
            {
                case 0x21: // extension: label, then sub-blocks
                    at += 2;
                    if (!SkipSubBlocks(bytes, ref at)) return false;
                    break;
                case 0x2C: // image descriptor (9 bytes after the separator), local colour table, LZW code size, sub-blocks
                    if (at + 10 > bytes.Length) return false;
                    byte image = bytes[at + 9];
                    at += 10;
                    if ((image & 0x80) != 0) at += 3 << ((image & 7) + 1);
                    at += 1;
                    return SkipSubBlocks(bytes, ref at);
                default: // the trailer before any image, or something not followed here: the decoder judges
                    return true;
            }
        }
    }

    private static bool SkipSubBlocks(ReadOnlySpan<byte> bytes, ref int at)
    {
        while (at < bytes.Length)
        {
            int size = bytes[at];
            at += 1 + size;
            if (size == 0) return true;
        }
        return false;
    }

    /// <summary>How many bytes of an uncompressed BMP's pixel rows (or of a compressed one's declared image size) are missing; null when none are or the header is not followed.</summary>
    internal static long? BmpMissing(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length < 26) return null;
        long offset = BinaryPrimitives.ReadUInt32LittleEndian(bytes[10..]);
        int headerSize = BinaryPrimitives.ReadInt32LittleEndian(bytes[14..]);
        long width, height;
        int bitsPerPixel, compression = 0;
        long imageSize = 0;
        if (headerSize == 12)
        {
            width = BinaryPrimitives.ReadUInt16LittleEndian(bytes[18..]);
            height = BinaryPrimitives.ReadUInt16LittleEndian(bytes[20..]);
            bitsPerPixel = BinaryPrimitives.ReadUInt16LittleEndian(bytes[24..]);
        }
        else if (headerSize >= 40 && bytes.Length >= 38)
        {
            width = BinaryPrimitives.ReadInt32LittleEndian(bytes[18..]);
            height = Math.Abs((long)BinaryPrimitives.ReadInt32LittleEndian(bytes[22..]));
            bitsPerPixel = BinaryPrimitives.ReadUInt16LittleEndian(bytes[28..]);
            compression = BinaryPrimitives.ReadInt32LittleEndian(bytes[30..]);
            imageSize = BinaryPrimitives.ReadUInt32LittleEndian(bytes[34..]);
        }
        else
        {
            return null;
        }
        long needed;
        if (compression is 0 or 3 or 6) // BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS: whole rows, padded to 4 bytes
            needed = offset + (width * bitsPerPixel + 31) / 32 * 4 * height;
        else if (imageSize > 0)
            needed = offset + imageSize;
        else
            return null;
        return needed > bytes.Length ? needed - bytes.Length : null;
    }

    /// <summary>How many of the bytes a WebP's RIFF header declares are missing; null when none are.</summary>
    internal static long? WebpMissing(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length < 12) return null;
        long declared = BinaryPrimitives.ReadUInt32LittleEndian(bytes[4..]) + 8L;
        return declared > bytes.Length ? declared - bytes.Length : null;
    }
}

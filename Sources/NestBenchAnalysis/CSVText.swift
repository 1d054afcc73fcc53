import CSV
import Foundation

/// The one CSV writer of NestBench (RFC 4180 through CSV.swift's `CSVWriter`): a field holding a
/// comma, a double quote, CR or LF is quoted, quotes doubled; rows end with LF, the last one too.
public enum CSVText {
    /// A header row and data rows as CSV text.
    public static func render(header: [String], rows: [[String]]) -> String {
        // Writing to memory cannot fail short of running out of memory; a failure is still not hidden.
        let stream = OutputStream.toMemory()
        stream.open()
        do {
            let writer = try CSVWriter(stream: stream)
            try writer.write(row: header)
            for row in rows { try writer.write(row: row) }
        } catch {
            stream.close()
            return "error: CSV could not be written: \(error)\n"
        }
        stream.close()
        let data = stream.property(forKey: .dataWrittenToMemoryStreamKey) as? Data ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}

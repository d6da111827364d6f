// Aligned text columns, as the tables at exit and `rstwatch dump` print them.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

namespace rstwatch {

// Aligned columns: numbers right-aligned, text left-aligned, two spaces
// between columns, indented by two.
class TextTable {
public:
    struct Column {
        std::string header;
        bool right_aligned = false;
    };

    explicit TextTable(std::vector<Column> columns) : columns_(std::move(columns)) {}
    void add_row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }

    std::string render() const
    {
        std::vector<size_t> width(columns_.size());
        for (size_t c = 0; c < columns_.size(); ++c) {
            width[c] = columns_[c].header.size();
            for (const auto &row : rows_)
                width[c] = std::max(width[c], row[c].size());
        }
        std::string out;
        auto emit = [&](auto cell_of) {
            std::string line;
            for (size_t c = 0; c < columns_.size(); ++c) {
                const std::string &cell = cell_of(c);
                std::string pad(width[c] - cell.size(), ' ');
                line += "  ";  // the indent, then the gap between columns
                line += columns_[c].right_aligned ? pad + cell : cell + pad;
            }
            line.erase(line.find_last_not_of(' ') + 1);
            out += line + "\n";
        };
        emit([&](size_t c) -> const std::string & { return columns_[c].header; });
        for (const auto &row : rows_)
            emit([&](size_t c) -> const std::string & { return row[c]; });
        return out;
    }

private:
    std::vector<Column> columns_;
    std::vector<std::vector<std::string>> rows_;
};

}  // namespace rstwatch

package node

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Duration is a configuration value written as a Go duration string
// ("10s", "1m30s").
type Duration time.Duration

// String prints the duration as it would be written in a file.
func (d Duration) String() string { return time.Duration(d).String() }

var durationType = reflect.TypeOf(Duration(0))

// schemaFields maps the toml names of a section struct to its fields.
func schemaFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := f.Tag.Get("toml")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		out[name] = f
	}
	return out
}

func isTable(t reflect.Type) bool { return t.Kind() == reflect.Struct }

type leaf struct {
	key   string
	field reflect.StructField
	value reflect.Value
}

// leaves lists every settable key of the configuration.
func (c *Config) leaves() []leaf {
	var out []leaf
	var walk func(rv reflect.Value, path string)
	walk = func(rv reflect.Value, path string) {
		for name, f := range schemaFields(rv.Type()) {
			key := joinKey(path, name)
			if isTable(f.Type) {
				walk(rv.FieldByIndex(f.Index), key)
				continue
			}
			out = append(out, leaf{key: key, field: f, value: rv.FieldByIndex(f.Index)})
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	return out
}

// setValue converts a decoded TOML value into the field, enforcing the
// field's constraints. The error text is what the operator reads after the
// file, line and key.
func setValue(fv reflect.Value, f reflect.StructField, v any) error {
	switch {
	case f.Type == durationType:
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("must be a duration string like \"10s\", not %s", tomlType(v))
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return fmt.Errorf("%q is not a duration (like \"500ms\", \"10s\", \"5m\")", s)
		}
		if err := checkRange(f, int64(d), s); err != nil {
			return err
		}
		fv.SetInt(int64(d))
	case f.Type.Kind() == reflect.String:
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("must be a string, not %s", tomlType(v))
		}
		if err := checkEnum(f, s); err != nil {
			return err
		}
		fv.SetString(s)
	case f.Type.Kind() == reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			return fmt.Errorf("must be true or false, not %s", tomlType(v))
		}
		fv.SetBool(b)
	case f.Type.Kind() == reflect.Int || f.Type.Kind() == reflect.Int64:
		n, ok := v.(int64)
		if !ok {
			return fmt.Errorf("must be an integer, not %s", tomlType(v))
		}
		if err := checkRange(f, n, strconv.FormatInt(n, 10)); err != nil {
			return err
		}
		fv.SetInt(n)
	case f.Type.Kind() == reflect.Float64:
		switch n := v.(type) {
		case float64:
			fv.SetFloat(n)
		case int64:
			fv.SetFloat(float64(n))
		default:
			return fmt.Errorf("must be a number, not %s", tomlType(v))
		}
	case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.String:
		list, ok := v.([]any)
		if !ok {
			return fmt.Errorf("must be a list of strings, not %s", tomlType(v))
		}
		out := make([]string, 0, len(list))
		for i, e := range list {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("element %d must be a string, not %s", i, tomlType(e))
			}
			if err := checkEnum(f, s); err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
			out = append(out, s)
		}
		fv.Set(reflect.ValueOf(out))
	case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Int:
		list, ok := v.([]any)
		if !ok {
			return fmt.Errorf("must be a list of integers, not %s", tomlType(v))
		}
		out := make([]int, 0, len(list))
		for i, e := range list {
			n, ok := e.(int64)
			if !ok {
				return fmt.Errorf("element %d must be an integer, not %s", i, tomlType(e))
			}
			if err := checkRange(f, n, strconv.FormatInt(n, 10)); err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
			out = append(out, int(n))
		}
		fv.Set(reflect.ValueOf(out))
	default:
		panic(fmt.Sprintf("config: field %s has unsupported type %s", f.Name, f.Type))
	}
	return nil
}

func checkRange(f reflect.StructField, n int64, shown string) error {
	parse := func(tag string) (int64, bool) {
		s := f.Tag.Get(tag)
		if s == "" {
			return 0, false
		}
		if f.Type == durationType {
			d, err := time.ParseDuration(s)
			if err != nil {
				panic(fmt.Sprintf("config: field %s: bad %s tag %q", f.Name, tag, s))
			}
			return int64(d), true
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			panic(fmt.Sprintf("config: field %s: bad %s tag %q", f.Name, tag, s))
		}
		return v, true
	}
	lo, hasLo := parse("min")
	hi, hasHi := parse("max")
	if (hasLo && n < lo) || (hasHi && n > hi) {
		switch {
		case hasLo && hasHi:
			return fmt.Errorf("%s is out of range %s..%s", shown, f.Tag.Get("min"), f.Tag.Get("max"))
		case hasLo:
			return fmt.Errorf("%s is below the minimum %s", shown, f.Tag.Get("min"))
		default:
			return fmt.Errorf("%s is above the maximum %s", shown, f.Tag.Get("max"))
		}
	}
	return nil
}

func checkEnum(f reflect.StructField, s string) error {
	enum := f.Tag.Get("enum")
	if enum == "" {
		return nil
	}
	for _, e := range strings.Split(enum, ",") {
		if s == e {
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %s", s, strings.ReplaceAll(enum, ",", ", "))
}

// envValue turns an environment string into the TOML value the field would
// have in a file, so that one conversion path (setValue) checks both.
// Lists are comma-separated. A string that does not parse is passed on as a
// string and rejected by setValue with the usual message.
func envValue(t reflect.Type, s string) any {
	switch {
	case t == durationType || t.Kind() == reflect.String:
		return s
	case t.Kind() == reflect.Bool:
		if b, err := strconv.ParseBool(s); err == nil {
			return b
		}
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n
		}
	case t.Kind() == reflect.Float64:
		if n, err := strconv.ParseFloat(s, 64); err == nil {
			return n
		}
	case t.Kind() == reflect.Slice:
		var out []any
		for _, e := range strings.Split(s, ",") {
			e = strings.TrimSpace(e)
			if e == "" {
				continue
			}
			if t.Elem().Kind() == reflect.Int {
				n, err := strconv.ParseInt(e, 10, 64)
				if err != nil {
					return s
				}
				out = append(out, n)
				continue
			}
			out = append(out, e)
		}
		if out == nil {
			out = []any{}
		}
		return out
	}
	return s
}

func displayValue(v reflect.Value) any {
	if v.Type() == durationType {
		return Duration(v.Int()).String()
	}
	if v.Kind() == reflect.Slice && v.IsNil() {
		return reflect.MakeSlice(v.Type(), 0, 0).Interface()
	}
	return v.Interface()
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	default:
		return fmt.Sprintf("a %T", v)
	}
}

func joinKey(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// quoteKey writes a key as TOML would need it in a dotted path.
func quoteKey(k string) string {
	for _, r := range k {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return strconv.Quote(k)
		}
	}
	if k == "" {
		return `""`
	}
	return k
}

// keyLines finds the line of every key and table header in a TOML text, by
// the dotted path the decoder would give it (quoted parts kept quoted only
// where needed). BurntSushi/toml reports lines for syntax errors but not for
// keys; this scanner covers the forms keel's configuration uses: [tables],
// [[arrays]], key = value and dotted keys.
func keyLines(text string) map[string]int {
	out := map[string]int{}
	table := ""
	for i, line := range strings.Split(text, "\n") {
		s := strings.TrimSpace(line)
		if s == "" || s[0] == '#' {
			continue
		}
		if s[0] == '[' {
			inner := strings.TrimPrefix(strings.TrimPrefix(s, "["), "[")
			if end := strings.LastIndex(inner, "]"); end >= 0 {
				inner = inner[:end]
			}
			inner = strings.TrimSuffix(inner, "]")
			table = strings.Join(splitKey(inner), ".")
			if _, ok := out[table]; !ok {
				out[table] = i + 1
			}
			continue
		}
		eq := keyEnd(s)
		if eq < 0 {
			continue
		}
		key := joinKey(table, strings.Join(splitKey(s[:eq]), "."))
		if _, ok := out[key]; !ok {
			out[key] = i + 1
		}
	}
	return out
}

// keyEnd returns the index of the '=' that ends the key part of a line.
func keyEnd(s string) int {
	var quote byte
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '=':
			return i
		}
	}
	return -1
}

// splitKey splits a dotted TOML key into its parts, normalised with
// quoteKey so that `"a".b` and `a.b` give the same path.
func splitKey(k string) []string {
	var parts []string
	var cur strings.Builder
	var quote byte
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
				continue
			}
			cur.WriteByte(c)
		case c == '"' || c == '\'':
			quote = c
		case c == '.':
			parts = append(parts, quoteKey(strings.TrimSpace(cur.String())))
			cur.Reset()
		case c == ' ' || c == '\t':
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, quoteKey(strings.TrimSpace(cur.String())))
}

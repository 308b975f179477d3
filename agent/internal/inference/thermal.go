package inference

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ThermalRoot is where Linux lists its thermal zones.
const ThermalRoot = "/sys/class/thermal"

// Zone is one thermal zone's reading.
type Zone struct {
	Name    string  `json:"zone"` // thermal_zone0
	Type    string  `json:"type"` // cpu-thermal, gpu-thermal, soc0-thermal (Jetson)
	Celsius float64 `json:"celsius"`
}

// ReadThermal reads every thermal zone under root (ThermalRoot on a
// device). Zones that cannot be read (a sensor that is off reports an
// error on read) are left out; a machine without zones gives none.
func ReadThermal(root string) []Zone {
	dirs, _ := filepath.Glob(filepath.Join(root, "thermal_zone*"))
	slices.Sort(dirs)
	var out []Zone
	for _, d := range dirs {
		raw, err := os.ReadFile(filepath.Join(d, "temp"))
		if err != nil {
			continue
		}
		milli, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
		if err != nil {
			continue
		}
		typ, _ := os.ReadFile(filepath.Join(d, "type"))
		out = append(out, Zone{Name: filepath.Base(d), Type: strings.TrimSpace(string(typ)), Celsius: float64(milli) / 1000})
	}
	return out
}

package main

import (
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"
)

// Bar colours: light for ref, dark for smuxtun; blue download, orange upload.
var barColors = [4]color.RGBA{
	{0x9e, 0xc5, 0xe8, 0xff}, // download ref
	{0x1f, 0x5f, 0xa8, 0xff}, // download smuxtun
	{0xf6, 0xc2, 0x8b, 0xff}, // upload ref
	{0xc0, 0x5a, 0x00, 0xff}, // upload smuxtun
}

// writeChart draws a grouped bar chart of goodput, standard library only (no
// text: the legend is in the Markdown output).
func writeChart(name string, sum []summary) error {
	const (
		barW, gap, groupGap, margin, height = 24, 4, 40, 30, 400
	)
	maxV := 10.0
	for _, s := range sum {
		for _, v := range []float64{s.Ref.Down, s.Smux.Down, s.Ref.Up, s.Smux.Up} {
			maxV = max(maxV, v)
		}
	}
	groupW := 4*barW + 3*gap
	width := 2*margin + len(sum)*groupW + (len(sum)-1)*groupGap
	img := image.NewRGBA(image.Rect(0, 0, max(width, 2*margin+1), height+2*margin))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	y := func(v float64) int { return margin + height - int(v/maxV*height) }
	grey := image.NewUniform(color.RGBA{0xdd, 0xdd, 0xdd, 0xff})
	for v := 10.0; v <= maxV; v += 10 {
		draw.Draw(img, image.Rect(margin, y(v), img.Bounds().Dx()-margin, y(v)+1), grey, image.Point{}, draw.Src)
	}
	black := image.NewUniform(color.Black)
	draw.Draw(img, image.Rect(margin-1, margin, margin, margin+height+1), black, image.Point{}, draw.Src)
	draw.Draw(img, image.Rect(margin, margin+height, img.Bounds().Dx()-margin, margin+height+1), black, image.Point{}, draw.Src)
	for i, s := range sum {
		x0 := margin + i*(groupW+groupGap)
		for j, v := range []float64{s.Ref.Down, s.Smux.Down, s.Ref.Up, s.Smux.Up} {
			x := x0 + j*(barW+gap)
			draw.Draw(img, image.Rect(x, y(v), x+barW, margin+height), image.NewUniform(barColors[j]), image.Point{}, draw.Src)
		}
	}
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
